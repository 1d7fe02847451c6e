// engine::decode_graphs: CUDA graphs of decode steps, one per batch-size bucket.
//
// A decode step of the CUDA engine is ~40 kernel launches per layer; at batch 1 the launch overhead (a few us each)
// is larger than the time the GPU needs to read the weights. A CUDA graph replays the whole step with one launch.
// cuda_model makes this possible (engine/cuda/cuda-model.h): a decode-only batch prepared with pad_entries = bucket
// has pointers and launch shapes that depend only on the bucket, and the step's metadata reaches the device through
// an async copy from pinned staging that prepare() rewrites before every launch. So one graph per bucket serves
// every decode batch padded to that bucket.
//
// Per bucket:   first run  ──► eager (warm-up: cuBLAS picks its algorithms and sets up its workspace, lazy module
//                               loading happens)
//               second run ──► capture the enqueue on the stream, instantiate, launch the graph
//               later runs ──► launch the graph (replay)
//
// Contract for `enqueue` (the caller's): for a given bucket it must enqueue the same work with the same pointers and
// launch shapes every time, only on `stream`, without allocating, synchronising or reading results on the host.
// Inputs that change between replays live in buffers whose addresses do not change (cuda_model's staging).
//
// Thread-safety: none; one engine thread. The stream must not be the legacy default stream (capture needs a real
// stream). Destroying the object destroys the graphs.
#pragma once

#include <functional>
#include <vector>

#include "kernels/status.h"

namespace evident::engine {

class decode_graphs {
 public:
  // `buckets`: ascending batch sizes, e.g. {1, 2, 4, 8, 16, 32, 64}. Throws evident::error when not ascending or
  // not positive.
  explicit decode_graphs(std::vector<int> buckets);
  ~decode_graphs();
  decode_graphs(const decode_graphs&) = delete;
  decode_graphs& operator=(const decode_graphs&) = delete;

  // The smallest bucket >= n, or 0 when n is larger than the largest bucket (run eagerly then).
  int bucket_for(int n) const;

  // Runs `enqueue(stream)` for `bucket` as described above (eager, capture, or replay). Does not synchronise.
  // Throws evident::error (internal) naming the CUDA call that failed.
  void run(int bucket, kernels::stream_t stream, const std::function<void(kernels::stream_t)>& enqueue);

  struct counters {
    long eager = 0;     // warm-up runs
    long captures = 0;  // graphs captured
    long replays = 0;   // graph launches (the launch right after a capture included)
  };
  const counters& stats() const { return stats_; }
  const std::vector<int>& buckets() const { return buckets_; }

 private:
  struct slot;
  std::vector<int> buckets_;
  std::vector<slot> slots_;  // one per bucket
  counters stats_;
};

}  // namespace evident::engine
