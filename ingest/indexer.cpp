// The indexer. Pipeline of one ingest_folder run:
//
//   walk (calling thread) ──► work list ──► workers (N threads): read, sha256, parse, NFC, chunk, embed
//                                                 │ results (bounded queue)
//                                                 ▼
//                           writer (calling thread): one SQLite transaction per document, then FAISS add/remove
//                           in memory; every checkpoint_seconds and at the end: df flush, vectors.faiss save.
//
// Crash safety: SQLite is the source of truth. A crash after a document's commit but before the next checkpoint
// leaves vectors.faiss without that document's vectors (or with removed ones) and embedder_df behind the chunks; the
// next writer detects both (vector ids vs chunk ids, meta embedder.df_n vs chunk count) and repairs them before it
// writes anything.
#include "ingest/indexer.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "engine/base/error.h"
#include "engine/base/log.h"
#include "ingest/chunker.h"
#include "ingest/document.h"
#include "ingest/hashed-embedder.h"
#include "ingest/index-writer.h"
#include "ingest/sha256.h"
#include "ingest/store.h"
#include "ingest/text.h"
#include "ingest/token-count.h"
#include "ingest/vectors.h"

namespace evident::ingest {

namespace fs = std::filesystem;

namespace {

using clock_type = std::chrono::steady_clock;

int64_t mtime_ns(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000ll + st.st_mtim.tv_nsec;
}

bool inside(const fs::path& p, const fs::path& root) {
  auto r = root.lexically_normal().string();
  auto s = p.lexically_normal().string();
  if (!r.empty() && r.back() == '/') r.pop_back();
  return s == r || (s.size() > r.size() && s.compare(0, r.size(), r) == 0 && s[r.size()] == '/');
}

// Recursive walk: hidden entries (name starting with '.') are skipped with their subtrees; symbolic links are never
// followed (a link inside the folder points at a file that is ingested under its own path; a link out of the
// folder is reported); the store's own directory is skipped when it lies inside the folder; a directory that cannot
// be opened for lack of permission is passed over, one that fails otherwise is reported.
// POSIX calls relative to each directory's descriptor and plain strings: the paths built here are canonical already
// (a canonical root, no link followed), and std::filesystem's per-entry path parsing and extra stat calls cost
// about 4 us a file (SciFact's 5183 files: 25 ms of a 0.8 s run, before any worker starts).
class walker {
 public:
  walker(const fs::path& root, const fs::path& store_dir, std::vector<listed_file>& out,
         std::vector<skipped_file>& skipped)
      : root_(root), store_(store_dir), out_(out), skipped_(skipped) {}

  void run() {
    const int fd = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    EV_THROW_IF_NOT_KIND(fd >= 0, not_found, "cannot read folder ", root_.string(), ": ", std::strerror(errno));
    dir(fd, root_.string(), "");
    std::sort(out_.begin(), out_.end(), [](const listed_file& a, const listed_file& b) { return a.rel < b.rel; });
  }

 private:
  void unreadable(const std::string& rel, int err) {
    skipped_.push_back({rel, std::string("unreadable: ") + std::strerror(err)});
  }

  // Takes `fd` (an open directory) and closes it.
  void dir(int fd, const std::string& abs_dir, const std::string& rel_dir) {
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      unreadable(rel_dir, errno);
      ::close(fd);
      return;
    }
    std::string abs, rel;
    while (true) {
      errno = 0;
      const dirent* e = ::readdir(d);
      if (e == nullptr) {
        if (errno != 0) unreadable(rel_dir, errno);
        break;
      }
      const char* name = e->d_name;
      if (name[0] == '.') continue;  // hidden, and "." / ".."
      rel.assign(rel_dir).append(rel_dir.empty() ? "" : "/").append(name);
      abs.assign(abs_dir).append("/").append(name);
      unsigned type = e->d_type;
      struct stat st {};
      bool have_st = false;
      if (type == DT_UNKNOWN || type == DT_REG) {  // a regular file needs its size and mtime anyway
        if (::fstatat(::dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
          unreadable(rel, errno);
          continue;
        }
        have_st = true;
        type = IFTODT(st.st_mode);
      }
      if (type == DT_LNK) {
        std::error_code ec;
        const fs::path target = fs::weakly_canonical(abs, ec);
        if (ec || !inside(target, root_)) skipped_.push_back({rel, "symbolic link out of the folder (not followed)"});
      } else if (type == DT_DIR) {
        if (inside(abs, store_)) continue;  // once per directory: the path parsing costs nothing here
        const int sub = ::openat(::dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
          if (errno != EACCES) unreadable(rel, errno);
          continue;
        }
        dir(sub, abs, rel);
      } else if (type == DT_REG && have_st) {
        out_.push_back({rel, abs, static_cast<int64_t>(st.st_size), mtime_ns(st)});
      }
    }
    ::closedir(d);
  }

  const fs::path& root_;
  const fs::path& store_;
  std::vector<listed_file>& out_;
  std::vector<skipped_file>& skipped_;
};

std::string strip_path_prefix(std::string msg, const std::string& path) {
  if (msg.size() > path.size() + 2 && msg.compare(0, path.size(), path) == 0 && msg.compare(path.size(), 2, ": ") == 0)
    return msg.substr(path.size() + 2);
  return msg;
}

// The whole file: open, fstat for the size, read to the end (a file that grows meanwhile is read to its new end).
// Plain POSIX calls: with thousands of small files, an ifstream's seeks and buffer cost more than the read.
bool read_file(const std::string& p, std::string& out, std::string& err) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = std::string("unreadable: ") + std::strerror(errno);
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    err = std::string("unreadable: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  out.resize(static_cast<size_t>(std::max<off_t>(st.st_size, 0)) + 1);  // +1: the read that sees the end
  size_t have = 0;
  for (;;) {
    if (have == out.size()) out.resize(out.size() * 2);
    const ssize_t r = ::read(fd, out.data() + have, out.size() - have);
    if (r < 0) {
      if (errno == EINTR) continue;
      err = std::string("unreadable: read failed: ") + std::strerror(errno);
      ::close(fd);
      return false;
    }
    if (r == 0) break;
    have += static_cast<size_t>(r);
  }
  ::close(fd);
  out.resize(have);
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------------------
// prepared_document: the worker's output for one file.

prepared prepare_document(const index_writer& w, std::string_view bytes, const fs::path& name,
                          const ingest_options& opt) {
  prepared r;
  r.bytes = static_cast<int64_t>(bytes.size());
  r.sha256 = sha256_hex(bytes);
  if (bytes.empty()) throw error("empty file", error_kind::invalid_input);
  if (is_known_binary_extension(name)) throw error("binary file (" + name.extension().string() + ")", error_kind::invalid_input);
  const parser_i& p = parser_for(name);
  if (p.format() != "pdf" && looks_binary(bytes)) throw error("binary file (contains NUL bytes)", error_kind::invalid_input);
  r.doc = p.parse(bytes, name);
  if (r.doc.text.find_first_not_of(" \t\n") == std::string::npos) throw error("no text", error_kind::invalid_input);
  chunk_options co{opt.chunk_tokens, opt.chunk_overlap};
  r.chunks = chunk_document(r.doc, w.counter(), co);
  r.page_starts_json = page_starts_json(r.doc);
  r.headings_json = headings_json(r.doc);
  r.char_count = count_code_points(r.doc.text);
  const int dim = w.embedder().dim();
  r.vectors.resize(r.chunks.size() * static_cast<size_t>(dim));
  for (size_t i = 0; i < r.chunks.size(); ++i)
    w.embedder().embed_one(r.chunks[i].text, r.vectors.data() + i * static_cast<size_t>(dim), &r.df_buckets);
  return r;
}

// ---------------------------------------------------------------------------------------------------------------------

folder_listing list_folder(const fs::path& root_in, const fs::path& store_dir) {
  std::error_code ec;
  EV_THROW_IF_NOT_KIND(fs::is_directory(root_in, ec), not_found, "folder ", root_in.string(),
                       " does not exist or is not a directory");
  folder_listing l;
  l.root = fs::canonical(root_in);
  fs::path store = fs::weakly_canonical(store_dir, ec);
  if (ec) store = fs::absolute(store_dir).lexically_normal();  // an empty path would match every directory
  walker(l.root, store, l.files, l.skipped).run();
  return l;
}

ingest_summary ingest_folder(store& s, const fs::path& root, const ingest_options& opt) {
  return ingest_folder(s, list_folder(root, s.dir()), opt);
}

ingest_summary ingest_folder(store& s, folder_listing listing, const ingest_options& opt) {
  const auto t0 = clock_type::now();
  ingest_summary sum;
  sum.skipped = std::move(listing.skipped);
  const fs::path& root = listing.root;
  const std::vector<listed_file>& files = listing.files;
  sum.files_seen = static_cast<int>(files.size());
  // Bulk run: keep freed memory in the process. With glibc's defaults every file's large buffers (bytes, text,
  // chunks, vectors) and FTS5's hash are mmap'ed and unmapped again, and the kernel zero-fills the pages anew
  // each time: 0.62 -> 0.48 s of system time on the 20 MB corpus. Process-wide; ingest_folder is the CLI's bulk call.
  mallopt(M_MMAP_THRESHOLD, 256 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  mallopt(M_TOP_PAD, 64 << 20);
  const double cpu0 = thread_cpu_seconds();
  index_writer w(s, opt);
  const int64_t coll = *s.collection_id(opt.collection, true);
  const int64_t run_id = w.begin_run(root.string(), coll);

  // Existing documents of the collection by path.
  struct existing { int64_t id, size, mtime; std::string sha, root; };
  std::unordered_map<std::string, existing> have;
  {
    auto q = s.db().prepare("SELECT id, path, size, mtime, sha256, source_root FROM documents WHERE collection_id = ?");
    q.bind(1, coll);
    while (q.step()) have[q.col_text(1)] = {q.col_int(0), q.col_int(2), q.col_int(3), q.col_text(4), q.col_text(5)};
  }

  struct work { const listed_file* c; std::optional<existing> old; };
  std::vector<work> todo;
  std::unordered_map<std::string, bool> seen;
  int64_t total_bytes = 0;
  for (const auto& c : files) {
    seen[c.rel] = true;
    auto it = have.find(c.rel);
    if (it != have.end() && it->second.size == c.size && it->second.mtime == c.mtime) {
      ++sum.unchanged;
      continue;
    }
    if (c.size > opt.max_file_bytes) {
      sum.skipped.push_back({c.rel, "over-size: " + std::to_string(c.size) + " bytes (limit " +
                                        std::to_string(opt.max_file_bytes) + ")"});
      continue;
    }
    std::optional<existing> old;
    if (it != have.end()) old = it->second;
    todo.push_back({&c, old});
    total_bytes += c.size;
  }
  for (const auto& sk : sum.skipped)
    if (opt.warnings) std::fprintf(stderr, "warning: skipped %s: %s\n", sk.path.c_str(), sk.reason.c_str());

  // Workers.
  struct result {
    size_t idx = 0;
    bool ok = false;
    std::string reason;
    prepared p;
  };
  const int n_workers = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::mutex mu;
  std::condition_variable cv_put, cv_get;
  std::deque<result> queue;
  // The queue is bounded by the input bytes it holds (8 MB), not only by a count of files: the writer works in bursts
  // (a batch's COMMIT), and a bound of a few small files stopped the workers during each burst. Not more: what the
  // workers have queued when they finish still has to pass the writer and the FTS thread alone.
  const size_t max_queue = static_cast<size_t>(2 * n_workers + 2);
  constexpr int64_t max_queue_bytes = 8 << 20;
  int64_t queue_bytes = 0;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};
  int running = n_workers;
  clock_type::duration workers_blocked{}, writer_idle{};  // for EVIDENT_INGEST_PROFILE (workers' under `mu`)
  auto worker = [&] {
    // Workers run at nice +10: the writer and FTS threads are stages of one thread that everything passes through,
    // and at equal priority the scheduler shared the 2 cores evenly, so the FTS thread fell behind and finished
    // alone after the workers (20 MB: 1.8 s wall at +5, 1.5-1.6 s at +10, 1.7 s at +19). The queue of results keeps
    // the workers ahead. Linux: nice is per thread.
    errno = 0;
    const int nice_now = getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    if (errno == 0) setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(19, nice_now + 10));
    std::string bytes;
    for (size_t i = next++; i < todo.size() && !stop; i = next++) {
      result r;
      r.idx = i;
      const listed_file& c = *todo[i].c;
      std::string err;
      try {
        if (!read_file(c.abs, bytes, err)) {
          r.reason = err;
        } else if (static_cast<int64_t>(bytes.size()) > opt.max_file_bytes) {
          r.reason = "over-size: " + std::to_string(bytes.size()) + " bytes";
        } else if (todo[i].old && bytes.size() == static_cast<size_t>(todo[i].old->size) &&
                   sha256_hex(bytes) == todo[i].old->sha) {
          r.ok = true;  // same content, new mtime: p.doc stays empty
          r.p.sha256 = todo[i].old->sha;
          r.p.bytes = static_cast<int64_t>(bytes.size());
        } else {
          r.p = prepare_document(w, bytes, c.rel, opt);
          r.ok = true;
        }
      } catch (const std::exception& e) {
        r.ok = false;
        r.reason = strip_path_prefix(e.what(), c.rel);
      }
      std::unique_lock<std::mutex> lk(mu);
      const auto tw = clock_type::now();
      // Bounded by bytes (a few big files) or by count (many small ones), and never more than 4096 files: each
      // result holds its vectors and strings, so the count bounds memory where files are tiny.
      cv_put.wait(lk, [&] {
        return ((queue.size() < max_queue || queue_bytes < max_queue_bytes) && queue.size() < 4096) || stop;
      });
      workers_blocked += clock_type::now() - tw;
      queue_bytes += c.size;
      queue.push_back(std::move(r));
      // The writer is woken for 8 results or 64 KB of input, not for each: with SciFact's small files it slept and
      // woke once per file (5183 wake-ups). The last worker to finish wakes it in any case.
      if (queue.size() >= 8 || queue_bytes >= (64 << 10)) cv_get.notify_one();
    }
    std::lock_guard<std::mutex> lk(mu);
    --running;
    cv_get.notify_all();
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < n_workers; ++i) threads.emplace_back(worker);

  // Writer: the calling thread.
  const double cpu_loop = thread_cpu_seconds();
  int64_t done_bytes = 0;
  size_t done_files = 0;
  auto last_progress = clock_type::now();
  auto last_checkpoint = clock_type::now();
  bool progress_shown = false;
  auto draw_progress = [&](bool final) {
    if (!opt.progress) return;
    double secs = std::chrono::duration<double>(clock_type::now() - t0).count();
    double mbps = secs > 0 ? done_bytes / 1e6 / secs : 0;
    double eta = mbps > 0 ? (total_bytes - done_bytes) / 1e6 / mbps : 0;
    std::fprintf(stderr, "\r\033[Kingest: %zu/%zu files  %.1f MB  %.1f MB/s  %lld chunks  ETA %d:%02d", done_files,
                 todo.size(), done_bytes / 1e6, mbps, static_cast<long long>(sum.chunks), static_cast<int>(eta) / 60,
                 static_cast<int>(eta) % 60);
    if (final) std::fprintf(stderr, "\n");
    std::fflush(stderr);
    progress_shown = true;
  };
  try {
    std::deque<result> taken;  // the writer takes the whole queue at once: one lock and wake-up per batch, not per file
    while (true) {
      if (taken.empty()) {
        std::unique_lock<std::mutex> lk(mu);
        const auto tw = clock_type::now();
        cv_get.wait(lk, [&] { return !queue.empty() || running == 0; });
        writer_idle += clock_type::now() - tw;
        if (queue.empty()) break;
        taken.swap(queue);
        queue_bytes = 0;
        cv_put.notify_all();
      }
      result r = std::move(taken.front());
      taken.pop_front();
      const work& wk = todo[r.idx];
      const listed_file& c = *wk.c;
      ++done_files;
      done_bytes += c.size;
      if (!r.ok) {
        if (opt.progress && progress_shown) std::fprintf(stderr, "\r\033[K");
        if (opt.warnings) std::fprintf(stderr, "warning: skipped %s: %s\n", c.rel.c_str(), r.reason.c_str());
        sum.skipped.push_back({c.rel, r.reason});
      } else if (r.p.doc.text.empty()) {
        w.touch(wk.old->id, c.mtime);
        ++sum.unchanged;
      } else {
        file_info fi{c.rel, root.string(), r.p.sha256, c.size, c.mtime};
        try {
          w.write_document(coll, fi, r.p, wk.old ? std::optional<int64_t>(wk.old->id) : std::nullopt);
          sum.chunks += static_cast<int64_t>(r.p.chunks.size());
          sum.bytes += c.size;
          (wk.old ? sum.updated : sum.added)++;
        } catch (const error& e) {
          if (e.kind() != error_kind::invalid_input) throw;  // the store failed: abort the run
          if (opt.warnings) std::fprintf(stderr, "warning: skipped %s: %s\n", c.rel.c_str(), e.what());
          sum.skipped.push_back({c.rel, e.what()});
        }
      }
      auto now = clock_type::now();
      if (now - last_checkpoint > std::chrono::duration<double>(opt.checkpoint_seconds)) {
        w.checkpoint(false);
        last_checkpoint = now;
      }
      if (now - last_progress > std::chrono::milliseconds(250)) {
        draw_progress(false);
        last_progress = now;
      }
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    cv_put.notify_all();
    for (auto& t : threads) t.join();
    throw;
  }
  for (auto& t : threads) t.join();
  const double cpu_tail = thread_cpu_seconds();
  const auto workers_done = clock_type::now();
  // Prune documents of this root whose files are gone.
  if (opt.prune) {
    for (const auto& [path, e] : have) {
      if (seen.count(path) || e.root != root.string()) continue;
      w.remove(e.id);
      ++sum.removed;
    }
  }
  w.checkpoint(true, true);  // a bulk run: its WALs are copied and truncated now (index-writer.h)
  if (opt.progress && progress_shown) draw_progress(true);
  sum.seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
  w.end_run(run_id, summary_json(sum));
  // EVIDENT_INGEST_PROFILE=1 (bench/ingest.sh PROFILE=1): where the writer and FTS threads went.
  if (const char* prof = std::getenv("EVIDENT_INGEST_PROFILE"); prof && *prof && std::string_view(prof) != "0") {
    auto secs = [](clock_type::duration d) { return std::chrono::duration<double>(d).count(); };
    std::fprintf(stderr,
                 "ingest profile: writer thread CPU %.3f s (open %.3f, loop %.3f, after the workers %.3f; of all that: "
                 "FTS rows %.3f, COMMIT %.3f, checkpoints %.3f); writer idle %.3f s; workers blocked on a full queue "
                 "%.3f s (sum over threads); workers done at %.3f s of %.3f s\n",
                 thread_cpu_seconds() - cpu0, cpu_loop - cpu0, cpu_tail - cpu_loop, thread_cpu_seconds() - cpu_tail,
                 w.cpu().fts, w.cpu().commit, w.cpu().checkpoint, secs(writer_idle), secs(workers_blocked),
                 secs(workers_done - t0), sum.seconds);
  }
  return sum;
}

std::string summary_json(const ingest_summary& s) {
  nlohmann::json j;
  j["added"] = s.added;
  j["updated"] = s.updated;
  j["removed"] = s.removed;
  j["unchanged"] = s.unchanged;
  j["skipped"] = nlohmann::json::array();
  for (const auto& k : s.skipped) j["skipped"].push_back({{"path", k.path}, {"reason", k.reason}});
  j["chunks"] = s.chunks;
  j["bytes"] = s.bytes;
  j["seconds"] = s.seconds;
  return j.dump();
}

int64_t ingest_bytes(store& s, const std::string& name, const std::string& bytes, const ingest_options& opt) {
  EV_THROW_IF_NOT_MSG(!name.empty(), "upload needs a file name");
  EV_THROW_IF_NOT_MSG(static_cast<int64_t>(bytes.size()) <= opt.max_file_bytes, name, ": over-size (",
                      bytes.size(), " bytes, limit ", opt.max_file_bytes, ")");
  index_writer w(s, opt);
  const int64_t coll = *s.collection_id(opt.collection, true);
  prepared p;
  try {
    p = prepare_document(w, bytes, name, opt);
  } catch (const error& e) {
    EV_THROW(invalid_input, name, ": ", strip_path_prefix(e.what(), name));
  }
  std::optional<int64_t> old;
  {
    auto q = s.db().prepare("SELECT id FROM documents WHERE collection_id = ? AND path = ?");
    q.bind(1, coll).bind(2, name);
    if (q.step()) old = q.col_int(0);
  }
  auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch());
  file_info fi{name, "", p.sha256, static_cast<int64_t>(bytes.size()), static_cast<int64_t>(now.count())};
  int64_t id = w.write_document(coll, fi, p, old);
  w.checkpoint();
  return id;
}

bool remove_document(store& s, int64_t document_id) {
  ingest_options opt;
  index_writer w(s, opt);
  if (!s.document(document_id)) return false;
  w.remove(document_id);
  w.checkpoint();
  return true;
}

}  // namespace evident::ingest
