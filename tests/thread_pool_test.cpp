// The persistent thread pool: every chunk runs exactly once per call whether the workers are
// spinning (calls back to back), asleep (calls far apart) or the caller has to sleep (a slow
// worker chunk), and the pool shuts down cleanly in each state. ParallelForStealing: every unit
// exactly once, whatever the shares, and a slow thread's units are taken over by the others.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <functional>
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

// Units covered exactly once by a ParallelForStealing call (-1 for a range outside [0, units)).
int64_t StolenCoveredOnce(ThreadPool& pool, int64_t units,
                          const std::function<int64_t(int)>* first) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(units));
  std::atomic<bool> bad_range{false};
  pool.ParallelForStealing(units, first, [&](int, UnitQueue& queue) {
    int64_t b = 0, e = 0;
    while (queue.Next(&b, &e)) {
      if (!(0 <= b && b < e && e <= units)) bad_range = true;
      for (int64_t u = b; u < e && !bad_range; ++u) hits[static_cast<size_t>(u)].fetch_add(1);
    }
  });
  if (bad_range) return -1;
  int64_t ok = 0;
  for (auto& h : hits) ok += h.load() == 1;
  return ok;
}

TEST(ThreadPool, StealingRunsEveryUnitOnce) {
  for (int threads : {1, 2, 3, 4}) {
    ThreadPool pool(threads);
    // Shares from first_unit, including empty ones and out-of-range starts (clamped).
    const std::function<int64_t(int)> all_to_last = [](int) { return int64_t{1} << 40; };
    const std::function<int64_t(int)> uneven = [](int t) { return int64_t{t} * t * 3; };
    for (const auto* first :
         {static_cast<const std::function<int64_t(int)>*>(nullptr), &all_to_last, &uneven}) {
      for (int64_t units : {0, 1, 2, 3, 7, 64, 1000}) {
        for (int call = 0; call < 20; ++call)
          ASSERT_EQ(StolenCoveredOnce(pool, units, first), units)
              << threads << " threads, " << units << " units";
      }
    }
  }
}

TEST(ThreadPool, StealingRelievesASlowThread) {
  // Thread 0's share is 20 of 40 units. After its first claim (a quarter of its share: 5 units, or
  // fewer if the other thread already took some) it stalls until every other unit has run (or 20 s
  // pass): the other thread's own 20, then the back halves of what thread 0 has left, again and
  // again. So thread 0 runs its first claim only, however the threads are scheduled; without
  // stealing it would run all 20. Thread 1 starts once thread 0 has made that claim: started
  // first on a loaded host (an ASan run in CI), it had taken every unit before thread 0 came.
  ThreadPool pool(2);
  std::vector<std::atomic<int>> hits(40);
  std::atomic<int64_t> ran[2] = {0, 0};
  std::atomic<bool> claimed{false};
  pool.ParallelForStealing(40, nullptr, [&](int t, UnitQueue& queue) {
    int64_t b = 0, e = 0;
    bool first = true;
    if (t == 1) {
      const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!claimed.load() && std::chrono::steady_clock::now() < give_up)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    while (queue.Next(&b, &e)) {
      if (t == 0) claimed.store(true);
      for (int64_t u = b; u < e; ++u) hits[static_cast<size_t>(u)].fetch_add(1);
      ran[t].fetch_add(e - b);
      if (t == 0 && first) {
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (ran[0].load() + ran[1].load() < 40 && std::chrono::steady_clock::now() < give_up)
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      first = false;
    }
  });
  for (auto& h : hits) EXPECT_EQ(h.load(), 1);
  EXPECT_EQ(ran[0].load() + ran[1].load(), 40);
  EXPECT_GE(ran[0].load(), 1);
  EXPECT_LE(ran[0].load(), 5) << "thread 1 took none of the slow thread's units";
}

}  // namespace
}  // namespace dsv3
