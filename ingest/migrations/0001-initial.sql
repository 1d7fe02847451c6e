-- evident store schema, migration 0001. Applied by ingest/store.cpp in one transaction when user_version < 1.
-- Later versions are later files in ingest/migrations/ (NNNN-name.sql); never edit a released step, add the next one.
-- Character offsets (char_start/char_end, page_starts) count Unicode code points of documents.text (NFC);
-- byte offsets (byte_start/byte_end) count UTF-8 bytes of the same text. Both are stored so that C++ can slice
-- without re-scanning and the API can report spans in code points.

CREATE TABLE IF NOT EXISTS collections (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL UNIQUE,
  created_at  INTEGER NOT NULL                  -- unix seconds
);

CREATE TABLE IF NOT EXISTS documents (
  id           INTEGER PRIMARY KEY,
  collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
  path         TEXT NOT NULL,                   -- path relative to the ingested root (or upload name)
  source_root  TEXT NOT NULL DEFAULT '',        -- absolute root the path is relative to
  sha256       TEXT NOT NULL,                   -- hex of the file's bytes
  size         INTEGER NOT NULL,                -- bytes
  mtime        INTEGER NOT NULL,                -- unix nanoseconds
  format       TEXT NOT NULL,                   -- txt | md | html | pdf | csv | tsv | code
  title        TEXT NOT NULL,
  pages        INTEGER NOT NULL DEFAULT 1,
  page_starts  TEXT NOT NULL DEFAULT '[0]',     -- JSON array: code-point offset where page i+1 starts
  headings     TEXT NOT NULL DEFAULT '[]',      -- JSON array of {level, title, char_start}
  text         TEXT NOT NULL,                   -- full normalised (NFC) text
  char_count   INTEGER NOT NULL,                -- code points in text
  ingested_at  INTEGER NOT NULL,
  UNIQUE (collection_id, path)
);

CREATE TABLE IF NOT EXISTS chunks (
  id           INTEGER PRIMARY KEY,             -- also the FAISS id
  document_id  INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
  ordinal      INTEGER NOT NULL,                -- 0-based position within the document
  char_start   INTEGER NOT NULL,                -- code points, [start, end) in documents.text
  char_end     INTEGER NOT NULL,
  byte_start   INTEGER NOT NULL,                -- UTF-8 bytes, [start, end) in documents.text
  byte_end     INTEGER NOT NULL,
  page         INTEGER NOT NULL,                -- 1-based page of char_start
  heading_path TEXT NOT NULL DEFAULT '',        -- "Chapter 2 > Section 2.1"
  token_count  INTEGER NOT NULL,
  text         TEXT NOT NULL,                   -- == substr(documents.text, char_start, char_end - char_start)
  UNIQUE (document_id, ordinal)
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_id, ordinal);

-- Full-text index over chunk text (external content: rows mirror chunks by rowid = chunks.id).
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
  text, content='chunks', content_rowid='id', tokenize='porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text) VALUES (new.id, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);
END;

-- Document frequencies for the default hashed TF-IDF embedder (feature = hashed n-gram id).
CREATE TABLE IF NOT EXISTS embedder_df (
  feature INTEGER PRIMARY KEY,
  df      INTEGER NOT NULL
);

-- Store-wide key/value facts: embedder name + dim, chunker settings, tokenizer used, counts for the df table.
CREATE TABLE IF NOT EXISTS meta (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS ingest_runs (
  id          INTEGER PRIMARY KEY,
  started_at  INTEGER NOT NULL,
  finished_at INTEGER,                          -- NULL while running or when the run crashed
  root        TEXT NOT NULL,
  collection_id INTEGER REFERENCES collections(id) ON DELETE SET NULL,
  summary     TEXT                              -- JSON: {added, updated, removed, unchanged, skipped, chunks, seconds}
);
