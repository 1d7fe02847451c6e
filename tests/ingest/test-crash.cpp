// Crash safety: `evident ingest` is SIGKILLed at random points while ingesting a ~20 MB generated corpus, 10 times.
// After every kill the store must open, pass PRAGMA integrity_check and the FTS5 integrity check, and its vectors and
// its FTS file (evident-fts.db) must agree with SQLite after the repairs the next writer makes; the next run resumes,
// and a final run completes with everything in.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "ingest/store.h"
#include "tests/ingest/ingest-fixtures.h"
#include "tests/test-util.h"

namespace fs = std::filesystem;
using namespace evident;

namespace {

pid_t spawn_ingest(const std::string& bin, const fs::path& root, const fs::path& store) {
  pid_t pid = fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    dup2(devnull, 2);
    execl(bin.c_str(), bin.c_str(), "ingest", root.c_str(), "--store", store.c_str(), "--json", (char*)nullptr);
    _exit(127);
  }
  return pid;
}

// Path of generated file i (built with append, not operator+: GCC 12 warns -Wrestrict on the latter at -O3).
fs::path file_path(const fs::path& root, int i) {
  std::string dir = "d", name = "f";
  dir.append(std::to_string(i / 100));
  name.append(std::to_string(i)).append(".txt");
  return root / dir / name;
}

}  // namespace

TEST(IngestCrash, SigkillAtRandomPointsLeavesARepairableStore) {
  auto root = test::scratch_dir("ingest-crash/docs");
  auto sdir = test::scratch_dir("ingest-crash/store");
  const std::string bin = std::string(EVIDENT_TEST_BINARY_DIR) + "/api/evident";
  ASSERT_TRUE(fs::exists(bin)) << bin << " (build the evident target)";
  // ~20 MB: 400 files of 50 KB.
  const int n_files = 400;
  for (int i = 0; i < n_files; ++i)
    test::write_file(file_path(root, i), test::generated_text(50000, 1000 + static_cast<uint64_t>(i)));

  std::mt19937_64 rng(7);
  int needed_repair = 0, fts_lagged = 0;
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {  // every later run replaces a quarter of the documents too (deletes: FTS entries, vectors, df)
      for (int i = round % 4; i < n_files; i += 4)
        test::write_file(file_path(root, i), test::generated_text(40000, 5000 + 1000 * static_cast<uint64_t>(round) +
                                                                              static_cast<uint64_t>(i)));
    }
    pid_t pid = spawn_ingest(bin, root, sdir);
    ASSERT_GT(pid, 0);
    // Kill points spread over start-up, repair, parsing, commits and checkpoints (a full run takes 1.5-4 s).
    auto delay = std::chrono::milliseconds(20 + rng() % 1200);
    std::this_thread::sleep_for(delay);
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    std::string trace = "round ";
    trace.append(std::to_string(round)).append(", killed after ").append(std::to_string(delay.count())).append(" ms");
    SCOPED_TRACE(trace);
    auto chk = test::check_store(sdir);
    EXPECT_EQ(chk.integrity, "ok");
    EXPECT_TRUE(chk.fts_ok);
    EXPECT_TRUE(chk.fts_repaired_match) << "the FTS file disagrees with SQLite after sync_fts";
    fts_lagged += !chk.fts_match;
    needed_repair += !chk.vectors_match;
    EXPECT_TRUE(chk.repaired_match) << "vectors disagree with SQLite after repair: " << chk.vectors << " vectors, "
                                    << chk.chunks << " chunks";
  }
  std::printf("crash rounds whose vectors.faiss lagged SQLite (repaired on open): %d of 10; whose FTS file lagged: "
              "%d of 10\n", needed_repair, fts_lagged);
  // A run without interruption completes and leaves a consistent store with every file in.
  pid_t pid = spawn_ingest(bin, root, sdir);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  auto chk = test::check_store(sdir);
  EXPECT_EQ(chk.integrity, "ok");
  EXPECT_TRUE(chk.fts_ok);
  EXPECT_TRUE(chk.vectors_match);
  EXPECT_TRUE(chk.fts_match);
  EXPECT_EQ(chk.documents, n_files);
  EXPECT_EQ(chk.vectors, chk.chunks);
  ingest::store s(sdir);
  EXPECT_EQ(s.meta("embedder.df_n").value_or(""), std::to_string(s.chunk_count()));
  EXPECT_TRUE(test::df_matches_chunks(s));
}
