// bench_engine: see bench/engine-bench.cpp.
#include "bench/engine-bench.h"

int main(int argc, char** argv) {
  return evident::bench::run_engine_bench(argc, argv);
}
