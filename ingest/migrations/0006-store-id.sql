-- evident store schema, migration 0006: a random store id in meta `store.id`. sync_fts (ingest/fts-writer.h) copies
-- it into the FTS file's fts_state `store_id` and trusts its fast path (fts_state `batch` equal to meta `fts.batch`)
-- only when the two ids match, so an evident-fts.db that belongs to another store (a backup, a copied directory)
-- is rebuilt from `chunks` instead of serving another store's index. 63 random bits.
INSERT OR IGNORE INTO meta (key, value) VALUES ('store.id', CAST(abs(random()) AS TEXT));
