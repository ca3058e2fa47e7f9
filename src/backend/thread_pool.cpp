#include "backend/thread_pool.h"

#include <algorithm>
#include <cassert>

namespace dsv3 {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0)
    num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads_ = num_threads;
  shares_ = std::make_unique<Share[]>(static_cast<size_t>(num_threads));
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { WorkerLoop(i); });
}

namespace {

// Waits for `done` without sleeping for a while (tens of microseconds): pause instructions, and
// every 64th round a yield, so a spinning thread gives its core to a runnable one when the machine
// is oversubscribed (more threads than cores, or other processes). True if `done` held.
template <typename Pred>
bool SpinUntil(Pred done) {
  constexpr int kRounds = 1 << 12;
  for (int i = 0; i < kRounds; ++i) {
    if (done()) return true;
    if (i % 64 == 63) {
      std::this_thread::yield();
      continue;
    }
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
  return done();
}

}  // namespace

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::WorkerLoop(int index) {
  uint64_t seen = 0;
  for (;;) {
    auto fresh = [&] { return generation_.load() != seen; };
    if (!SpinUntil(fresh)) {
      std::unique_lock<std::mutex> lock(mutex_);
      sleeping_workers_.fetch_add(1);
      wake_.wait(lock, fresh);
      sleeping_workers_.fetch_sub(1);
    }
    seen = generation_.load();
    if (stop_.load()) return;
    (*job_.load())(index);
    if (pending_.fetch_sub(1) == 1 && caller_sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);
      done_.notify_one();
    }
  }
}

void ThreadPool::RunOnAll(const std::function<void(int)>& fn) {
  if (workers_.empty()) {
    fn(0);
    return;
  }
  job_.store(&fn);
  pending_.store(static_cast<int>(workers_.size()));
  generation_.fetch_add(1);
  if (sleeping_workers_.load() > 0) {
    std::lock_guard<std::mutex> lock(mutex_);
    wake_.notify_all();
  }
  fn(0);
  auto all_done = [&] { return pending_.load() == 0; };
  if (!SpinUntil(all_done)) {
    std::unique_lock<std::mutex> lock(mutex_);
    caller_sleeping_.store(true);
    done_.wait(lock, all_done);
    caller_sleeping_.store(false);
  }
}

void ThreadPool::ParallelFor(int64_t n, const std::function<void(int64_t, int64_t)>& fn,
                             int64_t grain) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t units = (n + grain - 1) / grain;
  const int64_t chunks = std::min<int64_t>(units, num_threads_);
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  struct State {
    int64_t n, grain, units, chunks;
    const std::function<void(int64_t, int64_t)>* fn;
  } const state{n, grain, units, chunks, &fn};
  RunOnAll([s = &state](int t) {
    if (t >= s->chunks) return;
    const int64_t begin = std::min(s->n, (s->units * t / s->chunks) * s->grain);
    const int64_t end = std::min(s->n, (s->units * (t + 1) / s->chunks) * s->grain);
    if (begin < end) (*s->fn)(begin, end);
  });
}

namespace {

constexpr uint64_t Pack(int64_t begin, int64_t end) {
  return static_cast<uint64_t>(begin) << 32 | static_cast<uint64_t>(end);
}
constexpr int64_t Begin(uint64_t range) {
  return static_cast<int64_t>(range >> 32);
}
constexpr int64_t End(uint64_t range) {
  return static_cast<int64_t>(range & 0xffffffffu);
}

}  // namespace

bool UnitQueue::Next(int64_t* begin, int64_t* end) {
  std::atomic<uint64_t>& mine = pool_->shares_[thread_].range;
  for (;;) {
    uint64_t r = mine.load();
    while (Begin(r) < End(r)) {
      const int64_t take = std::max<int64_t>(1, (End(r) - Begin(r)) / 4);
      if (mine.compare_exchange_weak(r, Pack(Begin(r) + take, End(r)))) {
        *begin = Begin(r);
        *end = Begin(r) + take;
        return true;
      }
    }
    // Out of units: take the back half of the largest share left ([mid, e); the owner keeps
    // [b, mid), empty when one unit is left).
    int victim = -1;
    int64_t most = 0;
    for (int v = 0; v < pool_->num_threads_; ++v) {
      const uint64_t vr = pool_->shares_[v].range.load();
      if (v != thread_ && End(vr) - Begin(vr) > most) {
        most = End(vr) - Begin(vr);
        victim = v;
      }
    }
    if (victim < 0) return false;
    std::atomic<uint64_t>& theirs = pool_->shares_[victim].range;
    uint64_t vr = theirs.load();
    const int64_t b = Begin(vr), e = End(vr);
    if (b >= e) continue;
    const int64_t mid = b + (e - b) / 2;
    // Only this thread writes its own empty share, so the store cannot lose a unit.
    if (theirs.compare_exchange_strong(vr, Pack(b, mid))) mine.store(Pack(mid, e));
  }
}

void ThreadPool::ParallelForStealing(int64_t units, const std::function<int64_t(int)>* first_unit,
                                     const std::function<void(int, UnitQueue&)>& fn) {
  if (units <= 0) return;
  assert(units <= int64_t{0xffffffff} && "ParallelForStealing: units must fit 32 bits");
  const int threads = num_threads_;
  const auto start = [&](int t) {
    if (t == 0) return int64_t{0};
    if (t == threads) return units;
    const int64_t u = first_unit != nullptr ? (*first_unit)(t) : units * t / threads;
    return std::clamp<int64_t>(u, 0, units);
  };
  int64_t begin = 0;
  for (int t = 0; t < threads; ++t) {
    const int64_t end = std::max(begin, start(t + 1));
    shares_[t].range.store(Pack(begin, end));
    begin = end;
  }
  if (threads <= 1) {
    UnitQueue queue(this, 0);
    fn(0, queue);
    return;
  }
  // One captured pointer keeps the lambda in std::function's small buffer (no allocation).
  struct State {
    ThreadPool* pool;
    const std::function<void(int, UnitQueue&)>* fn;
  } const state{this, &fn};
  RunOnAll([s = &state](int t) {
    UnitQueue queue(s->pool, t);
    (*s->fn)(t, queue);
  });
}

}  // namespace dsv3
