// The persistent thread pool: every chunk runs exactly once per call whether the workers are
// spinning (calls back to back), asleep (calls far apart) or the caller has to sleep (a slow
// worker chunk), and the pool shuts down cleanly in each state.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "backend/thread_pool.h"

namespace dsv3 {
namespace {

int64_t CoveredOnce(ThreadPool& pool, int64_t n) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
  pool.ParallelFor(n, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[static_cast<size_t>(i)].fetch_add(1);
  });
  int64_t ok = 0;
  for (auto& h : hits) ok += h.load() == 1;
  return ok;
}

TEST(ThreadPool, BackToBackCallsWhileWorkersSpin) {
  for (int threads : {2, 3, 4}) {
    ThreadPool pool(threads);
    for (int call = 0; call < 2000; ++call) ASSERT_EQ(CoveredOnce(pool, 7), 7) << call;
  }
}

TEST(ThreadPool, CallsAfterWorkersFellAsleep) {
  ThreadPool pool(3);
  for (int call = 0; call < 20; ++call) {
    std::this_thread::sleep_for(std::chrono::milliseconds(3));  // past the spin: workers sleep
    ASSERT_EQ(CoveredOnce(pool, 100), 100);
  }
}

TEST(ThreadPool, CallerSleepsUntilASlowWorkerFinishes) {
  ThreadPool pool(2);
  for (int call = 0; call < 10; ++call) {
    std::atomic<int> done{0};
    pool.RunOnAll([&](int t) {
      if (t == 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
      done.fetch_add(1);
    });
    ASSERT_EQ(done.load(), 2);  // RunOnAll returned only after the slow worker
  }
}

TEST(ThreadPool, ShutsDownSpinningOrSleeping) {
  { ThreadPool pool(4); }  // workers never ran a job
  {
    ThreadPool pool(4);
    CoveredOnce(pool, 10);  // destroyed while workers spin
  }
  {
    ThreadPool pool(4);
    CoveredOnce(pool, 10);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // destroyed while they sleep
  }
}

}  // namespace
}  // namespace dsv3
