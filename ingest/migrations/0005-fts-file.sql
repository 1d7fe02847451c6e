-- evident store schema, migration 0005 (ingest throughput): the full-text index moves to its own database file,
-- DIR/evident-fts.db, attached to every store connection as schema `fts` (ingest/store.cpp, ingest/fts-writer.h).
-- Why: building the FTS5 index was more than half of the ingest writer thread's CPU, and one SQLite connection writes
-- one database file at a time; in a second file, an FTS thread with its own connection indexes a batch while the
-- writer goes on with the next one.
-- fts.chunks_fts is contentless (content=''), same column `text` and tokenizer `porter unicode61 remove_diacritics 2`
-- as before, rowid = chunks.id: MATCH, bm25/rank, chunks_fts_docsize and the FTS5 extension API read it as before
-- (unqualified names resolve to the attached schema), and rankings are unchanged. It is filled from `chunks` when
-- first created (fts-writer.h: sync_fts), so this step only drops the old index and its triggers.
-- Writers other than ingest (plain SQL on chunks: tests, `evident eval retrieval`) keep it in sync through TEMP
-- triggers that every read-write store connection creates (store.cpp); the ingest writer writes it itself and
-- records its progress in meta `fts.batch` (evident.db) and fts_state `batch` (evident-fts.db).
DROP TRIGGER IF EXISTS chunks_ai;
DROP TRIGGER IF EXISTS chunks_ad;
DROP TABLE IF EXISTS chunks_fts;
DELETE FROM meta WHERE key = 'ingest.fts_deferred';
