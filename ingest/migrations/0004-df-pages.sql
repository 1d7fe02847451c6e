-- evident store schema, migration 0004 (ingest throughput): the default embedder's document frequencies are stored as
-- 64 pages of 4096 counts instead of one row per bucket.
-- Why: a fresh store has ~240k non-zero buckets of the 2^18; writing them as rows cost the ingest writer ~0.15-0.25 s
-- of CPU per checkpoint (about a tenth of a SciFact-sized ingest); 64 blobs cost a few milliseconds, and a checkpoint
-- writes only the pages that changed.
-- Page p holds buckets [p * 4096, (p + 1) * 4096) as 4096 little-endian uint32 (16 KiB). Meta embedder.df_n is N.
-- Right after this step, in the same transaction, store::migrate (C++: migrate_df_rows_to_pages) converts the rows
-- of embedder_df into pages and drops embedder_df.
CREATE TABLE IF NOT EXISTS embedder_df_pages (
  page    INTEGER PRIMARY KEY,   -- 0..63
  counts  BLOB NOT NULL          -- 4096 x uint32 little-endian
);
