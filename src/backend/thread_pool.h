// A persistent pool of worker threads (DESIGN.md §2 backend/). Threads are created once; each
// ParallelFor wakes them, splits [0, n) into contiguous chunks and returns when all are done
// (ParallelForStealing: contiguous shares that idle threads take over from busy ones).
// Waiting threads spin briefly before they sleep: a decode step or a training step runs hundreds
// of short parallel regions back to back, and a futex sleep/wake per region costs more than the
// region's own work at small sizes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace dsv3 {

class ThreadPool;

// One thread's view of a ParallelForStealing region: the units it is to run, one at a time.
class UnitQueue {
 public:
  // The next units [*begin, *end) for this thread: from the front of its own share, a quarter of
  // what is left of it (at least one unit: fewer claims, each a locked instruction that waits for
  // the thread's outstanding memory operations, while most of the share stays open to others);
  // when the share is empty, the back half of the largest share left, taken over as its own.
  // False when no unit is left anywhere.
  bool Next(int64_t* begin, int64_t* end);

 private:
  friend class ThreadPool;
  UnitQueue(ThreadPool* pool, int thread) : pool_(pool), thread_(thread) {}
  ThreadPool* pool_;
  int thread_;
};

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

  // Runs units [0, units) over the threads, balanced at run time: calls fn(thread, queue) once on
  // every thread, and fn takes units with queue.Next() until it returns false. Each thread starts
  // with a contiguous share (from first_unit(t), or units * t / num_threads without it, to the
  // next thread's start) and takes it front to back, a quarter of the rest at a time; a thread that
  // runs out takes the back half of the largest share left. So with no imbalance a thread's units
  // are its share in order (one contiguous stream of memory, as with ParallelFor), and a thread the
  // host slows down (or that was handed slower work) is relieved instead of waited for. Every unit
  // runs exactly once; which thread runs it depends on timing. Requires units < 2^32 (a share
  // packs two unit indices in one atomic word). Not reentrant, as ParallelFor.
  void ParallelForStealing(int64_t units, const std::function<int64_t(int thread)>* first_unit,
                           const std::function<void(int thread, UnitQueue& queue)>& fn);

  // Calls fn(thread_index) once on every thread (thread_index in [0, num_threads)).
  void RunOnAll(const std::function<void(int thread_index)>& fn);

 private:
  void WorkerLoop(int index);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  // The job is published by storing job_ and then bumping generation_; a worker that sees a new
  // generation runs job_ and decrements pending_. Sleepers (after the spin) block on the condition
  // variables; the atomics' sequentially consistent order guarantees a publisher either sees the
  // sleeper's flag and notifies it, or the sleeper sees the new state before it blocks.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<const std::function<void(int)>*> job_{nullptr};
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<int> sleeping_workers_{0};
  std::atomic<bool> caller_sleeping_{false};
  std::atomic<bool> stop_{false};
  // ParallelForStealing's shares: [begin, end) in units, packed as begin << 32 | end, one cache
  // line each (made once, with the workers).
  friend class UnitQueue;
  struct alignas(64) Share {
    std::atomic<uint64_t> range{0};
  };
  std::unique_ptr<Share[]> shares_;
};

}  // namespace dsv3
