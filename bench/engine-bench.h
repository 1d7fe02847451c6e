// The engine benchmark (bench/engine-bench.cpp) as a function, so `bench_engine` and `evident bench engine` share it.
#pragma once

namespace evident::bench {

// argv[0] is the program name; the flags are bench_engine's (see bench/engine-bench.cpp). Prints one JSON line per
// run on stdout and a summary on stderr. Returns 0, 1 when the run failed, 2 for a usage error.
int run_engine_bench(int argc, char** argv);

}  // namespace evident::bench
