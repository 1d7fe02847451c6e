#include "engine/cuda/decode-graph.h"

#include <cuda_runtime.h>

#include <algorithm>

#include "engine/base/error.h"
#include "engine/cuda/cuda-call.h"

#define EV_GRAPH_CHECK(call) EV_CUDA_THROW("decode_graphs", call)

namespace evident::engine {

struct decode_graphs::slot {
  int runs = 0;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
};

decode_graphs::decode_graphs(std::vector<int> buckets) : buckets_(std::move(buckets)) {
  EV_THROW_IF_NOT_MSG(!buckets_.empty(), "decode_graphs: no buckets");
  for (size_t i = 0; i < buckets_.size(); ++i)
    EV_THROW_IF_NOT_MSG(buckets_[i] > 0 && (i == 0 || buckets_[i] > buckets_[i - 1]),
                        "decode_graphs: buckets must be positive and ascending; bucket ", i, " is ", buckets_[i]);
  slots_.resize(buckets_.size());
}

decode_graphs::~decode_graphs() {
  for (auto& s : slots_) {
    if (s.exec) cudaGraphExecDestroy(s.exec);
    if (s.graph) cudaGraphDestroy(s.graph);
  }
}

int decode_graphs::bucket_for(int n) const {
  for (int b : buckets_)
    if (b >= n) return b;
  return 0;
}

void decode_graphs::run(int bucket, kernels::stream_t stream, const std::function<void(kernels::stream_t)>& enqueue) {
  auto it = std::find(buckets_.begin(), buckets_.end(), bucket);
  EV_ASSERT(it != buckets_.end(), "decode_graphs: ", bucket, " is not a bucket");
  EV_ASSERT(stream != nullptr, "decode_graphs: capture needs a non-default stream");
  slot& s = slots_[static_cast<size_t>(it - buckets_.begin())];
  cudaStream_t st = reinterpret_cast<cudaStream_t>(stream);
  if (s.runs++ == 0) {
    enqueue(stream);
    ++stats_.eager;
    return;
  }
  if (!s.exec) {
    EV_GRAPH_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue(stream);
    } catch (...) {
      cudaGraph_t g = nullptr;
      cudaStreamEndCapture(st, &g);  // leave the stream usable
      if (g) cudaGraphDestroy(g);
      throw;
    }
    EV_GRAPH_CHECK(cudaStreamEndCapture(st, &s.graph));
    EV_GRAPH_CHECK(cudaGraphInstantiate(&s.exec, s.graph, 0));
    ++stats_.captures;
  }
  EV_GRAPH_CHECK(cudaGraphLaunch(s.exec, st));
  ++stats_.replays;
}

}  // namespace evident::engine
