// `evident bench engine ...`: the engine benchmark (bench/engine-bench.cpp), same flags as bench_engine.
#include <cstdio>
#include <string>
#include <vector>

#include "api/cli.h"
#include "api/commands.h"
#include "bench/engine-bench.h"

namespace evident::cli {
int cmd_bench(const std::vector<std::string>& argv) {
  const bool help = !argv.empty() && (argv.back() == "--help" || argv.back() == "-h" || argv[0] == "--help" ||
                                      argv[0] == "-h");
  if (argv.empty() || help) {
    std::printf(
        "usage: evident bench engine --layers N --batch B --prompt P --gen G [--device cuda|cpu] [--budget T]\n"
        "                            [--no-graphs] [--threads n] [--gemv-max-m M] [--profile]\n"
        "                            | --runs B:P:G[:nog][:cublas][:legacy],...\n\n"
        "A random-weight Qwen3-Next at the 80B model's real widths with N layers, served through the scheduler:\n"
        "prefill tokens/s, time to first token, decode tokens/s per sequence and aggregate, memory, beside the\n"
        "measured bandwidth and GEMM bounds. One JSON line per run.\n");
    return argv.empty() ? 2 : 0;
  }
  if (argv[0] != "engine") throw usage_error{"unknown benchmark '" + argv[0] + "' (expected: engine)"};
  std::vector<std::string> own(argv.begin(), argv.end());
  own[0] = "evident bench engine";
  std::vector<char*> ptrs;
  for (auto& s : own) ptrs.push_back(s.data());
  return evident::bench::run_engine_bench(static_cast<int>(ptrs.size()), ptrs.data());
}
}  // namespace evident::cli
