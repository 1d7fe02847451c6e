-- evident store schema, migration 0003 (ingest throughput): the chunk triggers step aside while the ingest writer
-- holds meta key 'ingest.fts_deferred' inside its open batch transaction.
-- Why: FTS5 (SQLite 3.40) flushes its pending terms into a new index segment at every statement savepoint taken after
-- the FTS table joined the transaction (every statement that fires a trigger, every multi-row INSERT, ...), so a
-- trigger-maintained index gets one small segment per document and spends its time merging them. The writer instead
-- collects a batch's FTS rows and writes them to chunks_fts itself, row by row, just before COMMIT (one flush per
-- batch). The key is inserted and deleted inside that one transaction, so no other connection ever sees it and a
-- crash cannot leave it behind; for every other writer (tests, `evident eval retrieval`, SQL by hand) the triggers
-- keep chunks_fts in sync exactly as before. The FTS table itself (name, column, tokenizer, content) is unchanged.

DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks
WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'ingest.fts_deferred') BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks
WHEN NOT EXISTS (SELECT 1 FROM meta WHERE key = 'ingest.fts_deferred') BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- FTS5 buffers up to `hashsize` bytes of pending terms before it writes a segment (default 1 MiB). 16 MiB lets one
-- ingest batch (ingest/index-writer.h batch_bytes) become one segment: fewer segments to merge while writing and to
-- read while searching. Persistent (chunks_fts_config); only writers use the memory.
INSERT INTO chunks_fts(chunks_fts, rank) VALUES ('hashsize', 16777216);
