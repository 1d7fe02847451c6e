// `evident`: the one executable. Dispatches to the subcommand table; converts errors into one line + exit code.
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "api/cli.h"
#include "api/commands.h"
#include "engine/base/error.h"

namespace {

using evident::cli::command;

// OpenBLAS (linked for FAISS) starts a pool of threads when it loads, and they spin (sched_yield) for a while before
// they sleep: CPU taken from the ingest workers on a 2-core machine, and about 0.04 s of wall time per process. evident
// calls no BLAS routine that would use them (FAISS searches one query at a time, below its BLAS threshold; ingest
// adds to flat indexes). The thread count is read in the library's constructor, before main and before anything
// here could set OPENBLAS_NUM_THREADS, so the pool is stopped here instead, unless the user set that variable.
// Looked up at run time: with another BLAS behind Debian's alternatives the symbols are absent and nothing happens.
void stop_blas_threads() {
  if (std::getenv("OPENBLAS_NUM_THREADS") != nullptr) return;
  auto* set_threads = reinterpret_cast<void (*)(int)>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  auto* shutdown = reinterpret_cast<int (*)()>(dlsym(RTLD_DEFAULT, "blas_thread_shutdown_"));
  if (set_threads == nullptr || shutdown == nullptr) return;
  set_threads(1);  // later BLAS calls run on the calling thread and start no pool again
  shutdown();
}

// The table every subcommand is registered in (keep alphabetical).
const std::vector<command>& commands() {
  static const std::vector<command> table = {
      {"ask", "answer a question from the documents, with verified citations", evident::cli::cmd_ask},
      {"bench", "benchmark the engine at Qwen3-Next's real widths (bench engine ...)", evident::cli::cmd_bench},
      {"eval", "evaluate retrieval on a BEIR dataset (eval retrieval --beir DIR)", evident::cli::cmd_eval},
      {"ingest", "ingest a folder of documents into the store (incremental)", evident::cli::cmd_ingest},
      {"model", "inspect or run a Qwen3-Next checkpoint on the CPU (model info|run|chat)", evident::cli::cmd_model},
      {"serve", "serve the REST API, the OpenAI-compatible endpoint and the web page", evident::cli::cmd_serve},
      {"tokenize", "encode text into token ids or decode ids (--decode)", evident::cli::cmd_tokenize},
      {"version", "print the version", evident::cli::cmd_version},
  };
  return table;
}

void print_help() {
  std::printf("usage: evident <command> [options]\n\n"
              "evident answers questions over your documents with cited, verified evidence.\n\ncommands:\n");
  for (const auto& c : commands()) std::printf("  %-12s %s\n", c.name, c.summary);
  std::printf("\nRun `evident <command> --help` for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  stop_blas_threads();
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0 ||
      std::strcmp(argv[1], "help") == 0) {
    print_help();
    return argc < 2 ? 2 : 0;
  }
  const std::string name = argv[1];
  const command* cmd = nullptr;
  for (const auto& c : commands())
    if (name == c.name || (name == "--version" && std::strcmp(c.name, "version") == 0)) cmd = &c;
  if (cmd == nullptr) {
    std::fprintf(stderr, "evident: unknown command '%s' (run `evident --help` for the list)\n", name.c_str());
    return 2;
  }
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    return cmd->run(args);
  } catch (const evident::cli::usage_error& e) {
    std::fprintf(stderr, "evident %s: %s (run `evident %s --help`)\n", cmd->name, e.message.c_str(), cmd->name);
    return 2;
  } catch (const evident::error& e) {
    std::fprintf(stderr, "evident %s: %s\n", cmd->name, e.what());
    return e.kind() == evident::error_kind::invalid_input ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "evident %s: internal error: %s\n", cmd->name, e.what());
    return 1;
  }
}
