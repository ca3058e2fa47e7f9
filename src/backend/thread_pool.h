// A persistent pool of worker threads (DESIGN.md §2 backend/). Threads are created once; each
// ParallelFor wakes them, splits [0, n) into contiguous chunks and returns when all are done.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv3 {

class ThreadPool {
 public:
  // num_threads <= 0 means all hardware threads. The calling thread takes part, so a pool of
  // N threads starts N-1 workers.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return num_threads_; }

  // Calls fn(begin, end) on disjoint chunks covering [0, n), at most one chunk per thread, chunk
  // boundaries rounded to multiples of `grain` (except the last). Blocks until all chunks are done.
  // Not reentrant: fn must not call ParallelFor on the same pool.
  void ParallelFor(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn,
                   int64_t grain = 1);

  // Calls fn(thread_index) once on every thread (thread_index in [0, num_threads)).
  void RunOnAll(const std::function<void(int thread_index)>& fn);

 private:
  void WorkerLoop(int index);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int)>* job_ = nullptr;
  uint64_t generation_ = 0;
  int pending_ = 0;
  bool stop_ = false;
};

}  // namespace dsv3
