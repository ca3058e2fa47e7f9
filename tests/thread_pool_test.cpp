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

// Units covered exactly once by a ParallelForStealing call; `slow` sleeps that long per call on
// thread 0. units_run[t]: units thread t ran.
int64_t StolenCoveredOnce(ThreadPool& pool, int64_t units, const std::function<int64_t(int)>* first,
                          std::chrono::microseconds slow, std::vector<int64_t>* units_run) {
  std::vector<std::atomic<int>> hits(static_cast<size_t>(units));
  std::vector<std::atomic<int64_t>> ran(static_cast<size_t>(pool.num_threads()));
  std::atomic<bool> bad_range{false};
  pool.ParallelForStealing(units, first, [&](int t, UnitQueue& queue) {
    int64_t b = 0, e = 0;
    while (queue.Next(&b, &e)) {
      if (!(0 <= b && b < e && e <= units)) bad_range = true;
      for (int64_t u = b; u < e && !bad_range; ++u) hits[static_cast<size_t>(u)].fetch_add(1);
      ran[static_cast<size_t>(t)].fetch_add(e - b);
      if (t == 0 && slow.count() > 0) std::this_thread::sleep_for(slow);
    }
  });
  if (bad_range) return -1;
  if (units_run != nullptr)
    for (auto& r : ran) units_run->push_back(r.load());
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
        for (int call = 0; call < 200; ++call)
          ASSERT_EQ(StolenCoveredOnce(pool, units, first, {}, nullptr), units)
              << threads << " threads, " << units << " units";
      }
    }
  }
}

TEST(ThreadPool, StealingRelievesASlowThread) {
  // Thread 0 sleeps 5 ms after each of its calls; its share is 20 of 40 units. The other thread
  // runs its own 20 at once and then takes over the back half of what thread 0 has left, again
  // and again: thread 0 runs far fewer than its 20 (a quarter of the rest per claim: 5, 3, ..).
  ThreadPool pool(2);
  std::vector<int64_t> ran;
  ASSERT_EQ(StolenCoveredOnce(pool, 40, nullptr, std::chrono::microseconds(5000), &ran), 40);
  ASSERT_EQ(ran.size(), 2u);
  EXPECT_EQ(ran[0] + ran[1], 40);
  EXPECT_LT(ran[0], 16) << "thread 1 took none of the slow thread's units";
}

}  // namespace
}  // namespace dsv3
