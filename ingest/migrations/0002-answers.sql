-- evident store schema, migration 0002 (citation / answer pipeline): every answer and its evidence.
-- Written by api/pipeline.cpp after each `ask` (CLI and server); read by `GET /v1/answers/{id}` and audits.
-- Citations keep the document title/path and the span text they resolved to, so an answer stays readable after its
-- document is re-ingested or removed (chunk_id and document_id are therefore plain integers, not foreign keys).

CREATE TABLE IF NOT EXISTS answers (
  id             INTEGER PRIMARY KEY,
  created_at     INTEGER NOT NULL,              -- unix milliseconds
  tenant         TEXT NOT NULL DEFAULT '',      -- '' when auth is off
  question       TEXT NOT NULL,
  answer         TEXT NOT NULL,                 -- clean answer text shown to people (markers as [n])
  raw_answer     TEXT NOT NULL DEFAULT '',      -- the generator's answer as produced (inline quotes kept)
  reasoning      TEXT NOT NULL DEFAULT '',      -- the <think> trace, never shown as the answer
  not_found      INTEGER NOT NULL DEFAULT 0,    -- 1: explicit abstention ("not found in the documents")
  extractive     INTEGER NOT NULL DEFAULT 0,    -- 1: composed from passages by the extractive answerer
  cancelled      INTEGER NOT NULL DEFAULT 0,
  finish_reason  TEXT NOT NULL DEFAULT '',      -- stop | length | cancelled | error | abstained
  generator      TEXT NOT NULL,                 -- generator_i::name(): extractive | engine:<dir> | openai:<model>
  template       TEXT NOT NULL,                 -- prompt template id@version
  collection     TEXT,                          -- NULL = every collection
  budget_tokens  INTEGER NOT NULL DEFAULT 0,
  context_tokens INTEGER NOT NULL DEFAULT 0,    -- packed prompt tokens (system + passages + question)
  passages       TEXT NOT NULL DEFAULT '[]',    -- JSON: packed context [{label, document_id, chunk_ids, char_start,
                                                --   char_end, page_start, page_end, score, tokens}]
  uncited_claims TEXT NOT NULL DEFAULT '[]',    -- JSON: byte offsets in `answer` of claims without a citation
  usage          TEXT NOT NULL DEFAULT '{}',    -- JSON: engine::usage_info
  timings        TEXT NOT NULL DEFAULT '{}',    -- JSON: retrieval_ms, packing_ms, generation_ms, citation_ms, total_ms
  sampling       TEXT NOT NULL DEFAULT '{}'     -- JSON: the sampling parameters used
);
CREATE INDEX IF NOT EXISTS answers_created ON answers(created_at);
CREATE INDEX IF NOT EXISTS answers_tenant ON answers(tenant, created_at);

CREATE TABLE IF NOT EXISTS answer_citations (
  answer_id      INTEGER NOT NULL REFERENCES answers(id) ON DELETE CASCADE,
  ordinal        INTEGER NOT NULL,              -- 0-based, in order of appearance in the answer
  label          INTEGER NOT NULL,              -- the [n] in the answer
  answer_offset  INTEGER NOT NULL,              -- byte offset of the marker in answers.answer
  chunk_id       INTEGER NOT NULL,
  document_id    INTEGER NOT NULL,
  document_title TEXT NOT NULL DEFAULT '',
  document_path  TEXT NOT NULL DEFAULT '',
  page           INTEGER NOT NULL DEFAULT 1,
  char_start     INTEGER NOT NULL,              -- code points in documents.text, [start, end)
  char_end       INTEGER NOT NULL,
  quote          TEXT NOT NULL DEFAULT '',
  span_text      TEXT NOT NULL DEFAULT '',
  verdict        TEXT NOT NULL,                 -- supported | other_passage | not_found | no_quote | invalid_label
  match_score    REAL NOT NULL DEFAULT 0,
  found_in_label INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (answer_id, ordinal)
);
CREATE INDEX IF NOT EXISTS answer_citations_document ON answer_citations(document_id);
