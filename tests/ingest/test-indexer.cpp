// The indexer end to end on real files the test writes: every format, spans and pages round-trip through the store,
// incremental re-ingest, and bad input skipped with reasons.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>

#include "ingest/embedder.h"
#include "ingest/hashed-embedder.h"
#include "ingest/indexer.h"
#include "ingest/store.h"
#include "ingest/vectors.h"
#include "ingest/wal-checkpointer.h"
#include "tests/ingest/ingest-fixtures.h"
#include "tests/test-util.h"

using namespace evident;
using namespace evident::ingest;
namespace fs = std::filesystem;

namespace {

ingest_options quiet(int chunk_tokens = 384, int overlap = 64) {
  ingest_options o;
  o.warnings = false;
  o.chunk_tokens = chunk_tokens;
  o.chunk_overlap = overlap;
  return o;
}

void write_corpus(const fs::path& dir) {
  test::write_file(dir / "notes.txt", test::generated_text(6000, 1) + "\nUnique marker kestrel in plain text.\n");
  test::write_file(dir / "guide.md", "# Guide\n\n" + test::generated_text(1500, 2) + "\n\n## Details\n\nThe heron "
                                     "section explains details. " + test::generated_text(1500, 3) + "\n");
  test::write_file(dir / "page.html", "<html><head><title>Web</title><script>x()</script></head><body><h1>Top</h1><p>" +
                                          test::generated_text(2000, 4) + "</p><table><tr><td>osprey</td><td>7</td>"
                                          "</tr></table></body></html>");
  test::write_file(dir / "table.csv", "species,count\nfalcon,3\nplover,12\n");
  test::write_file(dir / "src/main.py", "import os\n\n\ndef main():\n    print('hi')\n\n\ndef other():\n    return 2\n");
  test::write_file(dir / "unicode.txt", "Größe café naïve 日本語の文章。 e\xCC\x81t\xC3\xA9 " + test::generated_text(800, 5));
  test::make_pdf(dir / "paper.pdf", {"Page one talks about alpha particles. " + test::generated_text(1200, 6),
                                     "Page two covers beta decay omegatwo. " + test::generated_text(1200, 7),
                                     "Page three ends with gamma rays omegathree. " + test::generated_text(600, 8)});
  test::write_file(dir / ".hidden/secret.txt", "hidden file must not be ingested");
}

// For every chunk in the store: the stored span cut from the stored document text (code points and bytes) equals
// the chunk text, and the page is the page of char_start.
void expect_store_spans(store& s) {
  for (const auto& d0 : s.documents()) {
    auto d = s.document(d0.id, true);
    ASSERT_TRUE(d);
    const std::u32string u = test::to_u32(d->text);
    EXPECT_EQ(static_cast<int64_t>(u.size()), d->char_count) << d->path;
    for (const auto& c : s.chunks_of(d->id)) {
      ASSERT_LE(c.char_end, static_cast<int64_t>(u.size())) << d->path;
      EXPECT_EQ(test::to_utf8(u.substr(c.char_start, c.char_end - c.char_start)), c.text) << d->path << " #" << c.ordinal;
      EXPECT_EQ(d->text.substr(c.byte_start, c.byte_end - c.byte_start), c.text) << d->path << " #" << c.ordinal;
      EXPECT_EQ(c.page, store::page_of(d->page_starts, c.char_start)) << d->path << " #" << c.ordinal;
    }
  }
}

int64_t fts_hits(store& s, const std::string& word) {
  auto q = s.db().prepare("SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?");
  q.bind(1, word);
  q.step();
  return q.col_int(0);
}

}  // namespace

TEST(IngestFolder, EveryFormatRoundTripsSpansAndPages) {
  auto root = test::scratch_dir("ingest-formats/docs");
  auto sdir = test::scratch_dir("ingest-formats/store");
  write_corpus(root);
  store s(sdir);
  auto sum = ingest_folder(s, root, quiet(48, 8));
  EXPECT_EQ(sum.added, 7) << summary_json(sum);
  EXPECT_TRUE(sum.skipped.empty()) << summary_json(sum);
  expect_store_spans(s);

  std::map<std::string, document_row> by_path;
  for (auto& d : s.documents()) by_path[d.path] = d;
  ASSERT_TRUE(by_path.count("paper.pdf"));
  EXPECT_FALSE(by_path.count(".hidden/secret.txt"));
  EXPECT_EQ(by_path["src/main.py"].format, "code");
  EXPECT_EQ(by_path["table.csv"].format, "csv");
  EXPECT_EQ(by_path["page.html"].title, "Web");

  // PDF: three pages numbered from 1; markers land on their pages.
  const auto& pdf = by_path["paper.pdf"];
  EXPECT_EQ(pdf.pages, 3);
  auto full = s.document(pdf.id, true);
  const std::u32string u = test::to_u32(full->text);
  auto page_of_word = [&](const std::string& w) {
    auto pos = full->text.find(w);
    EXPECT_NE(pos, std::string::npos) << w;
    return store::page_of(full->page_starts, static_cast<int64_t>(test::to_u32(full->text.substr(0, pos)).size()));
  };
  EXPECT_EQ(page_of_word("alpha"), 1);
  EXPECT_EQ(page_of_word("omegatwo"), 2);
  EXPECT_EQ(page_of_word("omegathree"), 3);
  bool chunk_on_page3 = false;
  for (const auto& c : s.chunks_of(pdf.id)) chunk_on_page3 |= c.page == 3;
  EXPECT_TRUE(chunk_on_page3);

  // Markdown section path on chunks.
  bool heron = false;
  for (const auto& c : s.chunks_of(by_path["guide.md"].id))
    if (c.text.find("heron") != std::string::npos) {
      EXPECT_EQ(c.heading_path, "Guide > Details");
      heron = true;
    }
  EXPECT_TRUE(heron);
  // NFC: the decomposed é was composed.
  auto uni = s.document(by_path["unicode.txt"].id, true);
  EXPECT_NE(uni->text.find("\xC3\xA9t\xC3\xA9"), std::string::npos);

  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.vectors_match);
  EXPECT_EQ(chk.vectors, chk.chunks);
}

TEST(IngestFolder, IncrementalReplacesPrunesAndLeavesNoStaleChunks) {
  auto root = test::scratch_dir("ingest-incr/docs");
  auto sdir = test::scratch_dir("ingest-incr/store");
  test::write_file(root / "a.txt", test::generated_text(3000, 11) + " stalewordalpha appears here.");
  test::write_file(root / "b.md", "# B\n\n" + test::generated_text(3000, 12) + " stalewordbravo here.");
  test::write_file(root / "c.txt", test::generated_text(3000, 13));
  store s(sdir);
  auto s1 = ingest_folder(s, root, quiet(64, 8));
  EXPECT_EQ(s1.added, 3);
  std::set<int64_t> old_ids;
  for (auto& d : s.documents())
    if (d.path != "c.txt")
      for (auto& c : s.chunks_of(d.id)) old_ids.insert(c.id);
  std::string old_chunk_text = s.chunks_of(s.documents()[0].id)[0].text;

  // Unchanged re-run: nothing written.
  auto s2 = ingest_folder(s, root, quiet(64, 8));
  EXPECT_EQ(s2.unchanged, 3);
  EXPECT_EQ(s2.added + s2.updated + s2.removed, 0);

  // Modify one, delete one, add one.
  test::write_file(root / "a.txt", test::generated_text(2000, 21) + " freshwordcharlie appears now.");
  fs::remove(root / "b.md");
  test::write_file(root / "d.csv", "k,v\nfreshworddelta,1\n");
  auto s3 = ingest_folder(s, root, quiet(64, 8));
  EXPECT_EQ(s3.added, 1) << summary_json(s3);
  EXPECT_EQ(s3.updated, 1);
  EXPECT_EQ(s3.removed, 1);
  EXPECT_EQ(s3.unchanged, 1);
  EXPECT_EQ(s.document_count(), 3);

  EXPECT_EQ(fts_hits(s, "stalewordalpha"), 0);
  EXPECT_EQ(fts_hits(s, "stalewordbravo"), 0);
  EXPECT_EQ(fts_hits(s, "freshwordcharlie"), 1);
  EXPECT_EQ(fts_hits(s, "freshworddelta"), 1);

  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.vectors_match);
  EXPECT_EQ(chk.vectors, chk.chunks);

  // No stale vector: old ids are gone, and a search with an old chunk's text only returns live chunks.
  auto e = make_embedder(s);
  auto v = vector_index::open(s, *e);
  for (int64_t id : v->ids()) EXPECT_FALSE(old_ids.count(id)) << "stale vector id " << id;
  std::vector<float> q(static_cast<size_t>(e->dim()));
  e->embed_query(old_chunk_text, q.data());
  std::vector<float> scores(10);
  std::vector<int64_t> ids(10);
  v->search(q.data(), 10, scores.data(), ids.data());
  for (int64_t id : ids) {
    if (id >= 0) {
      EXPECT_TRUE(s.chunk(id).has_value()) << "search returned a chunk that no longer exists: " << id;
    }
  }

  // df follows the chunks: N and every bucket equal a recount from the stored chunk texts.
  EXPECT_EQ(s.meta("embedder.df_n").value_or(""), std::to_string(s.chunk_count()));
  EXPECT_TRUE(test::df_matches_chunks(s));
}

TEST(IngestFolder, BadInputIsSkippedWithReasons) {
  auto root = test::scratch_dir("ingest-bad/docs");
  auto sdir = test::scratch_dir("ingest-bad/store");
  test::write_file(root / "good.txt", test::generated_text(2000, 31));
  test::write_file(root / "empty.txt", "");
  test::write_file(root / "big.txt", test::generated_text(50000, 32));
  test::write_file(root / "blob.dat", std::string("\x01\x02\x00\x03 binary", 11));
  test::make_pdf(root / "whole.pdf", {"Some text. " + test::generated_text(3000, 33)});
  std::string pdf = test::read_file(root / "whole.pdf");
  test::write_file(root / "truncated.pdf", pdf.substr(0, pdf.size() / 3));
  fs::remove(root / "whole.pdf");
  fs::create_symlink("/etc/hostname", root / "outside-link.txt");

  store s(sdir);
  auto o = quiet();
  o.max_file_bytes = 20000;
  auto sum = ingest_folder(s, root, o);
  EXPECT_EQ(sum.added, 1) << summary_json(sum);
  std::map<std::string, std::string> why;
  for (auto& k : sum.skipped) why[k.path] = k.reason;
  EXPECT_NE(why["empty.txt"].find("empty"), std::string::npos) << summary_json(sum);
  EXPECT_NE(why["big.txt"].find("over-size"), std::string::npos) << summary_json(sum);
  EXPECT_NE(why["blob.dat"].find("binary"), std::string::npos) << summary_json(sum);
  EXPECT_FALSE(why["truncated.pdf"].empty()) << summary_json(sum);
  EXPECT_NE(why["outside-link.txt"].find("symbolic link"), std::string::npos) << summary_json(sum);
  EXPECT_EQ(s.document_count(), 1);
  auto chk = test::check_store(sdir);
  EXPECT_TRUE(chk.vectors_match);
}

// list_folder (the walk of every ingest_folder run, and what `evident ingest` overlaps with opening the store): nested
// folders, hidden entries with their subtrees, links never followed (one inside the folder is silently passed over,
// one out of it reported), the store's directory passed over when it lies inside the folder (and a store directory
// that does not exist yet excludes nothing), other file types ignored; sizes and mtimes are the files' own (compared with stat here).
TEST(IngestFolder, ListingFollowsNoLinksAndPassesOverTheStore) {
  auto root = test::scratch_dir("ingest-list/docs");
  test::write_file(root / "b.txt", "bee");
  test::write_file(root / "a/deep/c.md", "# sea");
  test::write_file(root / "a/z.txt", "zed");
  test::write_file(root / ".hidden/h.txt", "hidden");
  test::write_file(root / "a/.dot.txt", "dot");
  test::write_file(root / "store/evident.db", "not a document");  // a store inside the folder, named by store_dir
  fs::create_symlink(root / "b.txt", root / "inside-link.txt");
  fs::create_symlink("/etc/hostname", root / "a/outside-link.txt");
  fs::create_directory_symlink(root / "a", root / "dir-link");
  ASSERT_EQ(::mkfifo((root / "pipe").c_str(), 0600), 0);

  for (const fs::path& store_dir : {root / "store", root / "new-store"}) {
    const folder_listing l = list_folder(root / "a" / "..", store_dir);  // a root that is not canonical
    EXPECT_EQ(l.root, fs::canonical(root));
    std::vector<std::string> rels;
    for (const auto& f : l.files) {
      rels.push_back(f.rel);
      EXPECT_EQ(f.abs, (fs::canonical(root) / f.rel).string());
      struct stat st {};
      ASSERT_EQ(::stat(f.abs.c_str(), &st), 0) << f.abs;
      EXPECT_EQ(f.size, st.st_size) << f.rel;
      EXPECT_EQ(f.mtime, int64_t{st.st_mtim.tv_sec} * 1000000000 + st.st_mtim.tv_nsec) << f.rel;
    }
    const std::vector<std::string> want_store = {"a/deep/c.md", "a/z.txt", "b.txt"};
    const std::vector<std::string> want_new = {"a/deep/c.md", "a/z.txt", "b.txt", "store/evident.db"};
    EXPECT_EQ(rels, store_dir.filename() == "store" ? want_store : want_new) << store_dir;
    ASSERT_EQ(l.skipped.size(), 1u);
    EXPECT_EQ(l.skipped[0].path, "a/outside-link.txt");
    EXPECT_NE(l.skipped[0].reason.find("symbolic link"), std::string::npos);
  }
  try {
    list_folder(root / "missing", root / "store");
    ADD_FAILURE() << "a missing folder was listed";
  } catch (const error& e) {
    EXPECT_EQ(e.kind(), error_kind::not_found);
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

// A new document is written without a savepoint (index-writer.h): when one of its later chunks fails, the rows
// already written for it (document, first chunks, their FTS rows) must be deleted again, and the documents before and
// after it in the same batch must stay.
TEST(IngestFolder, FailedNewDocumentLeavesNoRows) {
  auto root = test::scratch_dir("ingest-undo/docs");
  auto sdir = test::scratch_dir("ingest-undo/store");
  test::write_file(root / "a.txt", test::generated_text(1500, 41));
  test::write_file(root / "b.txt", "Firstmarkerword opens the file. " + test::generated_text(3000, 42) +
                                       " Poisonmarkerword closes it.\n");
  test::write_file(root / "c.txt", test::generated_text(1500, 43));
  {
    store s(sdir);
    s.db().exec("CREATE TRIGGER test_poison BEFORE INSERT ON chunks WHEN new.text LIKE '%poisonmarkerword%' "
                "BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END");
    auto sum = ingest_folder(s, root, quiet(48, 8));
    EXPECT_EQ(sum.added, 2) << summary_json(sum);
    ASSERT_EQ(sum.skipped.size(), 1u) << summary_json(sum);
    EXPECT_EQ(sum.skipped[0].path, "b.txt");
    EXPECT_NE(sum.skipped[0].reason.find("poisoned chunk"), std::string::npos) << sum.skipped[0].reason;
    EXPECT_EQ(s.document_count(), 2);
    EXPECT_EQ(s.chunk_count(), sum.chunks);
    EXPECT_EQ(fts_hits(s, "firstmarkerword"), 0);  // b.txt's first chunk was written, then deleted
    EXPECT_EQ(fts_hits(s, "poisonmarkerword"), 0);
  }
  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.vectors_match);
  EXPECT_EQ(chk.documents, 2);
}

// When a new document's undo fails too, the whole batch is rolled back in evident.db (index-writer.h); the FTS rows
// the FTS thread already applied for that batch are undone change by change, so the FTS file still matches `chunks`
// without a repair, and what earlier runs indexed stays.
TEST(IngestFolder, RolledBackBatchLeavesTheFtsFileInStep) {
  auto root = test::scratch_dir("ingest-abort/docs");
  auto sdir = test::scratch_dir("ingest-abort/store");
  ingest_options o = quiet(48, 8);
  o.threads = 1;  // files reach the writer in path order
  test::write_file(root / "0-base.txt", test::generated_text(1500, 44) + " Basemarkerword.\n");
  store s(sdir);
  ingest_folder(s, root, o);
  ASSERT_EQ(fts_hits(s, "basemarkerword"), 1);
  // a-big.txt: enough chunks (> 256) that its FTS rows are sent to the FTS thread before the batch fails.
  test::write_file(root / "a-big.txt", "Bigmarkerword. " + test::generated_text(90000, 45));
  test::write_file(root / "b-poison.txt", test::generated_text(3000, 46) + " Poisonmarkerword.\n");
  s.db().exec("CREATE TRIGGER test_poison BEFORE INSERT ON chunks WHEN new.text LIKE '%poisonmarkerword%' "
              "BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END;"
              "CREATE TRIGGER test_no_undo BEFORE DELETE ON documents WHEN old.path = 'b-poison.txt' "
              "BEGIN SELECT RAISE(ABORT, 'undo blocked'); END");
  EXPECT_THROW(ingest_folder(s, root, o), error);
  EXPECT_EQ(s.document_count(), 1);
  EXPECT_EQ(fts_hits(s, "bigmarkerword"), 0);
  EXPECT_EQ(fts_hits(s, "basemarkerword"), 1);
  s.db().exec("DROP TRIGGER test_poison; DROP TRIGGER test_no_undo");
  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.fts_match);  // in step without sync_fts
}

TEST(IngestFolder, UnreadableFileIsSkippedByTheCli) {
  // Root reads any file, so the CLI runs as `nobody` (setpriv) when the test runs as root.
  auto base = test::scratch_dir("ingest-unreadable");
  auto root = base / "docs";
  auto sdir = base / "store";
  test::write_file(root / "ok.txt", test::generated_text(1000, 41));
  test::write_file(root / "locked.txt", "you cannot read me");
  fs::permissions(root / "locked.txt", fs::perms::none);
  fs::create_directories(sdir);
  fs::permissions(base, fs::perms::all);
  fs::permissions(sdir, fs::perms::all);
  const std::string bin = std::string(EVIDENT_TEST_BINARY_DIR) + "/api/evident";
  ASSERT_TRUE(fs::exists(bin)) << bin << " (build the evident target)";
  std::string prefix = geteuid() == 0 ? "setpriv --reuid=65534 --regid=65534 --clear-groups " : "";
  std::string cmd = prefix + bin + " ingest '" + root.string() + "' --store '" + sdir.string() + "' --json 2>/dev/null";
  FILE* p = popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int rc = pclose(p);
  EXPECT_EQ(WEXITSTATUS(rc), 0) << cmd << "\n" << out;
  auto j = nlohmann::json::parse(out);
  EXPECT_EQ(j["added"], 1);
  ASSERT_EQ(j["skipped"].size(), 1u) << out;
  EXPECT_EQ(j["skipped"][0]["path"], "locked.txt");
  EXPECT_NE(j["skipped"][0]["reason"].get<std::string>().find("unreadable"), std::string::npos) << out;

  // Nothing readable at all: exit status 1.
  auto root2 = base / "none";
  test::write_file(root2 / "empty.txt", "");
  fs::permissions(base / "none", fs::perms::all);
  std::string cmd2 = prefix + bin + " ingest '" + root2.string() + "' --store '" + sdir.string() +
                     "' --collection none --json >/dev/null 2>&1";
  EXPECT_EQ(WEXITSTATUS(std::system(cmd2.c_str())), 1);
}

// A bulk run (ingest_folder) ends with its WALs copied into evident.db / evident-fts.db and truncated (index-writer.h,
// truncate_wal), so the process that closes the store next has nothing left to copy; an upload on a long-lived
// connection (ingest_bytes) leaves its WAL to the usual checkpoints. Without the truncation the evident.db WAL of a
// 4 MB run stays at its high-water mark (background checkpoints are requested every 512 frames, 2 MiB).
TEST(IngestFolder, BulkRunTruncatesItsWalsUploadsDoNot) {
  auto root = test::scratch_dir("ingest-wal-end/docs");
  auto sdir = test::scratch_dir("ingest-wal-end/store");
  for (int i = 0; i < 40; ++i)
    test::write_file(root / (std::to_string(i) + ".txt"), test::generated_text(100000, 300 + i));
  auto wal_bytes = [&](const char* file) {
    std::error_code ec;
    const auto n = fs::file_size(sdir / (std::string(file) + "-wal"), ec);
    return ec ? uintmax_t(0) : n;  // no WAL file: nothing left in it
  };
  store s(sdir);
  ingest_folder(s, root, quiet(64, 8));
  // end_run writes a few pages after the truncation.
  EXPECT_LT(wal_bytes(store::db_file), 256u << 10);
  EXPECT_LT(wal_bytes(store::fts_file), 256u << 10);
  ingest_bytes(s, "up.txt", test::generated_text(1 << 20, 399), quiet(64, 8));  // 1 MB: under the 2 MiB requests
  EXPECT_GT(wal_bytes(store::db_file), 256u << 10) << "an upload's final checkpoint truncated the WAL";
}

TEST(IngestBytes, UploadReplacesAndRemoves) {
  auto sdir = test::scratch_dir("ingest-bytes/store");
  store s(sdir);
  auto o = quiet(64, 8);
  int64_t id = ingest_bytes(s, "up.md", "# Up\n\n" + test::generated_text(2000, 51), o);
  int64_t id2 = ingest_bytes(s, "up.md", "# Up\n\nreplaced uploadword " + test::generated_text(500, 52), o);
  EXPECT_EQ(id, id2);
  EXPECT_EQ(s.document_count(), 1);
  EXPECT_EQ(fts_hits(s, "uploadword"), 1);
  EXPECT_THROW(ingest_bytes(s, "x.pdf", "%PDF-1.4 garbage", o), evident::error);
  EXPECT_TRUE(remove_document(s, id));
  EXPECT_FALSE(remove_document(s, id));
  EXPECT_EQ(s.chunk_count(), 0);
  auto chk = test::check_store(sdir);
  EXPECT_TRUE(chk.vectors_match);
  EXPECT_EQ(chk.vectors, 0);
}

// The writer sends chunks_fts changes to the FTS thread itself (fts-writer.h): a replacement that fails after its old
// chunks were dropped must leave the old chunks and their FTS rows exactly as they were.
TEST(IngestFolder, FailedReplacementKeepsOldChunksSearchable) {
  auto root = test::scratch_dir("ingest-undo-replace/docs");
  auto sdir = test::scratch_dir("ingest-undo-replace/store");
  test::write_file(root / "a.txt", test::generated_text(1500, 61) + " Oldmarkerword stays.\n");
  test::write_file(root / "b.txt", test::generated_text(1500, 62));
  store s(sdir);
  auto s1 = ingest_folder(s, root, quiet(48, 8));
  EXPECT_EQ(s1.added, 2);
  const int64_t chunks_before = s.chunk_count();
  s.db().exec("CREATE TRIGGER test_poison BEFORE INSERT ON chunks WHEN new.text LIKE '%poisonmarkerword%' "
              "BEGIN SELECT RAISE(ABORT, 'poisoned chunk'); END");
  test::write_file(root / "a.txt", "Newmarkerword first. " + test::generated_text(1500, 63) + " Poisonmarkerword.\n");
  test::write_file(root / "c.txt", test::generated_text(800, 64) + " Thirdmarkerword.\n");
  auto s2 = ingest_folder(s, root, quiet(48, 8));
  EXPECT_EQ(s2.added, 1) << summary_json(s2);
  EXPECT_EQ(s2.updated, 0) << summary_json(s2);
  ASSERT_EQ(s2.skipped.size(), 1u) << summary_json(s2);
  EXPECT_EQ(s2.skipped[0].path, "a.txt");
  EXPECT_EQ(fts_hits(s, "oldmarkerword"), 1);
  EXPECT_EQ(fts_hits(s, "newmarkerword"), 0);
  EXPECT_EQ(fts_hits(s, "thirdmarkerword"), 1);
  EXPECT_EQ(s.chunk_count(), chunks_before + s2.chunks);
  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.fts_match);
  EXPECT_TRUE(chk.vectors_match);
}

// Writers other than ingest (tests, `evident eval retrieval`, SQL by hand) insert and delete chunks with plain SQL:
// the TEMP triggers of every read-write store connection keep the FTS file in sync for them (migration 0005).
TEST(StoreSchema, PlainSqlChunkWritesStillMaintainFts) {
  auto root = test::scratch_dir("ingest-plain-sql/docs");
  auto sdir = test::scratch_dir("ingest-plain-sql/store");
  test::write_file(root / "a.txt", test::generated_text(1500, 71));
  store s(sdir);
  ingest_folder(s, root, quiet(64, 8));
  const int64_t doc = s.documents()[0].id;
  s.db()
      .prepare("INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, "
               "token_count, text) VALUES (?, 1000, 0, 5, 0, 5, 1, 2, 'Sqlmarkerword here')")
      .bind(1, doc)
      .run();
  EXPECT_EQ(fts_hits(s, "sqlmarkerword"), 1);
  s.db().exec("DELETE FROM chunks WHERE ordinal = 1000");
  EXPECT_EQ(fts_hits(s, "sqlmarkerword"), 0);
  auto chk = test::check_store(sdir);
  EXPECT_TRUE(chk.fts_ok);
}

// A store written by the first release (migrations 0001 + 0002 as they shipped: chunks_fts in evident.db, kept by
// plain triggers, default FTS hashsize, user_version 2) opens, is upgraded (FTS index rebuilt in evident-fts.db from
// the chunks), answers every search exactly as before, and takes further ingests.
TEST(StoreSchema, Version2StoreIsUpgradedWithIdenticalSearchResults) {
  auto root = test::scratch_dir("ingest-migrate/docs");
  auto sdir = test::scratch_dir("ingest-migrate/store");
  for (int i = 0; i < 6; ++i)
    test::write_file(root / std::string(1, static_cast<char>('a' + i)).append(".txt"), test::generated_text(1200, 80 + i));
  const std::vector<std::string> words = {"the", "of", "and", "data", "system", "model", "results", "protein",
                                          "cell", "analysis", "time", "study"};
  auto ranked = [&](sql::db& db, const std::string& w) {
    std::vector<int64_t> ids;
    auto q = db.prepare("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ? ORDER BY rank, rowid");
    q.bind(1, w);
    while (q.step()) ids.push_back(q.col_int(0));
    return ids;
  };
  std::map<std::string, std::vector<int64_t>> before;
  {
    sql::db raw(sdir / store::db_file);
    for (const char* m : {"0001-initial.sql", "0002-answers.sql"})
      raw.exec(test::read_file(fs::path(EVIDENT_TEST_SOURCE_DIR) / "ingest" / "migrations" / m));
    raw.exec("PRAGMA user_version = 2; INSERT INTO collections(id, name, created_at) VALUES (1, 'old', 0)");
    std::string text;
    auto doc = raw.prepare(
        "INSERT INTO documents(collection_id, path, sha256, size, mtime, format, title, text, char_count, "
        "ingested_at) VALUES (1, ?, '', 0, 0, 'txt', '', ?, ?, 0)");
    for (int i = 0; i < 6; ++i) {
      text = test::generated_text(900, 90 + i);
      doc.reset();
      doc.bind(1, std::string("old").append(std::to_string(i))).bind(2, text);
      doc.bind(3, static_cast<int64_t>(text.size()));
      doc.run();
      const int64_t id = raw.last_insert_rowid();
      raw.prepare("INSERT INTO chunks(document_id, ordinal, char_start, char_end, byte_start, byte_end, page, "
                  "token_count, text) VALUES (?, 0, 0, ?, 0, ?, 1, 100, ?)")
          .bind(1, id).bind(2, static_cast<int64_t>(text.size())).bind(3, static_cast<int64_t>(text.size()))
          .bind(4, text)
          .run();
    }
    for (const auto& w : words) before[w] = ranked(raw, w);
  }
  store s(sdir);  // opening read-write migrates
  EXPECT_EQ(s.schema_version(), 6);
  EXPECT_TRUE(fs::exists(s.fts_path()));
  for (const auto& w : words) EXPECT_EQ(ranked(s.db(), w), before[w]) << w;
  int64_t non_empty = 0;
  for (const auto& w : words) non_empty += before[w].empty() ? 0 : 1;
  EXPECT_GE(non_empty, 6);  // the comparison means something
  auto sum = ingest_folder(s, root, quiet(64, 8));
  EXPECT_EQ(sum.added, 6) << summary_json(sum);
  for (const auto& w : words) EXPECT_GE(ranked(s.db(), w).size(), before[w].size()) << w;
  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.fts_match);
}

// A store written before migration 0004 keeps df as one row per bucket (table embedder_df): opening it read-write
// turns the rows into pages with the same counts, drops the old table, and ingest goes on from there.
TEST(StoreSchema, Version3DfRowsBecomePages) {
  auto root = test::scratch_dir("ingest-migrate-df/docs");
  auto sdir = test::scratch_dir("ingest-migrate-df/store");
  for (int i = 0; i < 4; ++i)
    test::write_file(root / std::string(1, static_cast<char>('a' + i)).append(".txt"),
                     test::generated_text(1500, 60 + i));
  std::vector<uint32_t> before;
  {
    store s(sdir);
    ingest_folder(s, root, quiet(64, 8));
    load_df(s, before);
    // Back to the version-3 layout: rows (feature, df) for the non-zero buckets, no pages.
    s.db().exec("CREATE TABLE embedder_df (feature INTEGER PRIMARY KEY, df INTEGER NOT NULL)");
    auto ins = s.db().prepare("INSERT INTO embedder_df(feature, df) VALUES (?, ?)");
    int64_t rows = 0;
    for (size_t b = 0; b < before.size(); ++b) {
      if (!before[b]) continue;
      ins.bind(1, static_cast<int64_t>(b)).bind(2, static_cast<int64_t>(before[b])).run();
      ins.reset();
      ++rows;
    }
    ASSERT_GT(rows, 1000);  // the comparison means something
    s.db().exec("DROP TABLE embedder_df_pages; PRAGMA user_version = 3");
  }
  store s(sdir);  // migrates
  EXPECT_EQ(s.schema_version(), 6);
  std::vector<uint32_t> after;
  load_df(s, after);
  EXPECT_EQ(after, before);
  auto t = s.db().prepare("SELECT count(*) FROM sqlite_master WHERE name = 'embedder_df'");
  t.step();
  EXPECT_EQ(t.col_int(0), 0);
  test::write_file(root / "e.txt", test::generated_text(1500, 65));
  auto sum = ingest_folder(s, root, quiet(64, 8));
  EXPECT_EQ(sum.added, 1) << summary_json(sum);
  EXPECT_TRUE(test::df_matches_chunks(s));
}

// The FTS file only ever lags evident.db (fts-writer.h); a lagging one is repaired by the next ingest writer:
// chunks it lacks are indexed, and when it holds entries of deleted chunks it is rebuilt.
TEST(StoreSchema, LaggingFtsFileIsRepaired) {
  auto root = test::scratch_dir("ingest-fts-lag/docs");
  auto sdir = test::scratch_dir("ingest-fts-lag/store");
  test::write_file(root / "a.txt", test::generated_text(3000, 75) + " Lagmarkerword here.");
  {
    store s(sdir);
    ingest_folder(s, root, quiet(64, 8));
    ASSERT_GE(fts_hits(s, "lagmarkerword"), 1);
  }
  int64_t marked = 0;
  {
    store s(sdir);
    marked = fts_hits(s, "lagmarkerword");
  }
  auto lag = [&](bool stale) {  // what a crash between the two commits leaves
    std::vector<std::pair<int64_t, std::string>> rows;
    {
      store s(sdir);
      auto q = s.db().prepare("SELECT id, text FROM chunks WHERE text LIKE '%Lagmarkerword%'");
      while (q.step()) rows.emplace_back(q.col_int(0), q.col_text(1));
    }
    ASSERT_FALSE(rows.empty());
    sql::db fts(sdir / store::fts_file);
    for (const auto& [id, text] : rows)
      fts.prepare("INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', ?, ?)")
          .bind(1, id).bind(2, text).run();
    if (stale)
      fts.exec("INSERT INTO chunks_fts(rowid, text) VALUES (999999, 'Stalemarkerword of a deleted chunk')");
    fts.exec("UPDATE fts_state SET value = value - 1 WHERE key = 'batch'");
  };
  for (bool stale : {false, true}) {
    SCOPED_TRACE(stale ? "stale entry" : "missing entry");
    // Repaired by the next ingest: the store is opened while another process holds the ingest lock (so the open
    // leaves the file alone), and the ingest writer syncs it under the lock once that is free.
    lag(stale);
    {
      std::optional<store> s;
      {
        const int fd = ::open((sdir / "ingest.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0);
        ASSERT_EQ(::flock(fd, LOCK_EX), 0);
        s.emplace(sdir);
        ::close(fd);
      }
      EXPECT_EQ(fts_hits(*s, "lagmarkerword"), 0);
      EXPECT_EQ(fts_hits(*s, "stalemarkerword"), stale ? 1 : 0);
      test::write_file(root / (stale ? "c.txt" : "b.txt"), test::generated_text(800, stale ? 77 : 76));
      ingest_folder(*s, root, quiet(64, 8));
      EXPECT_EQ(fts_hits(*s, "lagmarkerword"), marked);
      EXPECT_EQ(fts_hits(*s, "stalemarkerword"), 0);
    }
    auto chk = test::check_store(sdir);
    EXPECT_TRUE(chk.fts_ok);
    EXPECT_TRUE(chk.fts_match);
    // Repaired by any read-write open when no ingest runs (a server restarted after a killed ingest, before the next
    // ingest); a read-only open sees the lag and leaves it.
    lag(stale);
    {
      store ro(sdir, open_mode::read_only);
      EXPECT_EQ(fts_hits(ro, "lagmarkerword"), 0);
      EXPECT_EQ(fts_hits(ro, "stalemarkerword"), stale ? 1 : 0);
    }
    {
      store s(sdir);
      EXPECT_EQ(fts_hits(s, "lagmarkerword"), marked);
      EXPECT_EQ(fts_hits(s, "stalemarkerword"), 0);
    }
    chk = test::check_store(sdir);
    EXPECT_TRUE(chk.fts_ok);
    EXPECT_TRUE(chk.fts_match);
  }
}

// An evident-fts.db copied from another store, even with the same batch counter, is not trusted: the store ids differ,
// so the next read-write open rebuilds the index from this store's chunks.
TEST(StoreSchema, FtsFileOfAnotherStoreIsRebuilt) {
  auto root_a = test::scratch_dir("ingest-fts-foreign/a-docs");
  auto root_b = test::scratch_dir("ingest-fts-foreign/b-docs");
  auto dir_a = test::scratch_dir("ingest-fts-foreign/a");
  auto dir_b = test::scratch_dir("ingest-fts-foreign/b");
  test::write_file(root_a / "a.txt", test::generated_text(600, 81) + " Alphamarkerword.");
  test::write_file(root_b / "b.txt", test::generated_text(600, 82) + " Betamarkerword.");
  for (auto [root, dir] : {std::pair{root_a, dir_a}, std::pair{root_b, dir_b}}) {
    store s(dir);
    ingest_folder(s, root, quiet(64, 8));
  }
  std::string batch_a;
  {
    store s(dir_a);
    batch_a = s.meta("fts.batch").value_or("0");
    ASSERT_NE(s.meta("store.id").value_or(""), "");
  }
  std::filesystem::copy_file(dir_b / store::fts_file, dir_a / store::fts_file,
                             std::filesystem::copy_options::overwrite_existing);
  {
    sql::db fts(dir_a / store::fts_file);
    fts.prepare("UPDATE fts_state SET value = ? WHERE key = 'batch'").bind(1, static_cast<int64_t>(std::stoll(batch_a))).run();
  }
  {
    store ro(dir_a, open_mode::read_only);  // what a reader sees before any repair: B's index
    EXPECT_EQ(fts_hits(ro, "betamarkerword"), 1);
  }
  store s(dir_a);
  EXPECT_EQ(fts_hits(s, "alphamarkerword"), 1);
  EXPECT_EQ(fts_hits(s, "betamarkerword"), 0);
}

// A transaction that writes only evident.db (an answer being saved) must not wait for the attached FTS file, which a
// running ingest's FTS thread holds between its commits (while the ingest writer may wait for evident.db): deferred,
// its first write locks evident.db alone. IMMEDIATE would take the FTS file's lock too and wait for it.
TEST(StoreSchema, DeferredWriteDoesNotLockTheFtsFile) {
  auto root = test::scratch_dir("ingest-fts-lock/docs");
  auto sdir = test::scratch_dir("ingest-fts-lock/store");
  test::write_file(root / "a.txt", test::generated_text(500, 78));
  {
    store s(sdir);
    ingest_folder(s, root, quiet(64, 8));
  }
  store s(sdir);
  sql::db fts(sdir / store::fts_file);
  fts.exec("BEGIN IMMEDIATE");  // what the FTS thread holds between commits
  s.db().exec("PRAGMA busy_timeout = 200");
  {
    sql::transaction tx(s.db(), sql::begin_mode::deferred);
    s.db().exec("INSERT OR REPLACE INTO meta (key, value) VALUES ('test.deferred', '1')");
    tx.commit();
  }
  EXPECT_EQ(s.meta("test.deferred").value_or(""), "1");
  EXPECT_THROW(sql::transaction tx(s.db(), sql::begin_mode::immediate), evident::error);  // waits, then "locked"
  fts.exec("ROLLBACK");
}

TEST(WalCheckpointer, KeepsTheWalBoundedAndLosesNothing) {
  auto dir = test::scratch_dir("ingest-wal-ckpt");
  const auto file = dir / "t.db";
  const auto wal = dir / "t.db-wal";
  constexpr int txs = 40, rows = 8, blob = 16384;  // 128 KiB per transaction: about 35 pages of 4 KiB
  {
    sql::db w(file);
    w.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)");
    uintmax_t biggest = 0;
    {
      wal_checkpointer ck(w, file, 1000, /*restart_frames=*/64, /*inline_frames=*/1 << 20, /*request_frames=*/32);
      auto ins = w.prepare("INSERT INTO t(b) VALUES (zeroblob(?))");
      for (int i = 0; i < txs; ++i) {
        ck.settle();
        w.exec("BEGIN IMMEDIATE");
        for (int r = 0; r < rows; ++r) {
          ins.bind(1, static_cast<int64_t>(blob)).run();
          ins.reset();
        }
        w.exec("COMMIT");
        biggest = std::max<uintmax_t>(biggest, fs::file_size(wal));
      }
    }
    // Without rewinding the WAL would reach txs * 35 pages (about 5.6 MiB); with it, about restart_frames plus a
    // transaction or two (64 + 2 * 35 pages, under 0.6 MiB).
    EXPECT_LT(biggest, 1u << 20) << "WAL grew to " << biggest << " bytes";
    auto n = w.prepare("SELECT count(*), sum(length(b)) FROM t");
    ASSERT_TRUE(n.step());
    EXPECT_EQ(n.col_int(0), txs * rows);
    EXPECT_EQ(n.col_int(1), static_cast<int64_t>(txs) * rows * blob);
  }
  sql::db r(file);
  auto q = r.prepare("PRAGMA integrity_check");
  ASSERT_TRUE(q.step());
  EXPECT_EQ(q.col_text(0), "ok");
}
