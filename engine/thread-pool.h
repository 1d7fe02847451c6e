// engine::thread_pool: a fixed set of worker threads for data-parallel loops on the CPU backend.
//
// parallel_for(n, fn) splits [0, n) into size() contiguous ranges, runs fn(begin, end) for each (the calling thread
// takes the first range) and returns when all are done. Workers sleep on a condition variable between calls.
//
// Thread-safety: parallel_for may be called from any thread; calls are serialised by an internal mutex. A call made
// from inside fn (nested) runs serially on the calling worker instead of deadlocking.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace evident::engine {

class thread_pool {
 public:
  // n_threads <= 0: std::thread::hardware_concurrency().
  explicit thread_pool(int n_threads = 0);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn over [0, n) in at most size() ranges. `grain`: ranges smaller than this are not split further (n / grain
  // ranges at most), so small loops stay on one thread.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t grain = 1);

 private:
  void worker(int index);

  int n_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // serialises parallel_for calls
  std::mutex mu_;
  std::condition_variable cv_work_, cv_done_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  int job_parts_ = 0;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

// The process-wide pool the CPU backend uses (created on first use; EVIDENT_THREADS overrides the thread count).
thread_pool& default_thread_pool();

}  // namespace evident::engine
