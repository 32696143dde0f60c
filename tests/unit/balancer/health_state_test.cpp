// BackendState's health transitions: passive windows, rise/fall, and the hand-over between them.
#include <gtest/gtest.h>

#include <optional>

#include "limpet/balancer/backend.hpp"

namespace limpet::balancer {
namespace {

constexpr uint32_t kMaxFails = 3;
constexpr int64_t kWindowMs = 10000;

TEST(HealthState, PassiveFailuresWithinTheWindowMarkDown) {
  BackendState s("a", 1);
  EXPECT_FALSE(s.passive_failure(1000, kMaxFails, kWindowMs));
  EXPECT_FALSE(s.passive_failure(2000, kMaxFails, kWindowMs));
  EXPECT_TRUE(s.up.load());
  EXPECT_TRUE(s.passive_failure(3000, kMaxFails, kWindowMs));  // the transition is reported once
  EXPECT_FALSE(s.up.load());
  EXPECT_FALSE(s.passive_failure(3500, kMaxFails, kWindowMs));
  EXPECT_EQ(s.failures.load(), 4u);
}

TEST(HealthState, FailuresSpreadBeyondTheWindowDoNotAddUp) {
  BackendState s("a", 1);
  EXPECT_FALSE(s.passive_failure(0, kMaxFails, kWindowMs));
  EXPECT_FALSE(s.passive_failure(5000, kMaxFails, kWindowMs));
  EXPECT_FALSE(s.passive_failure(10000, kMaxFails, kWindowMs));  // a new window starts here
  EXPECT_FALSE(s.passive_failure(11000, kMaxFails, kWindowMs));
  EXPECT_TRUE(s.up.load());
  EXPECT_TRUE(s.passive_failure(12000, kMaxFails, kWindowMs));
}

TEST(HealthState, ZeroMaxFailsOnlyCounts) {
  BackendState s("a", 1);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(s.passive_failure(i, 0, kWindowMs));
  EXPECT_TRUE(s.up.load());
  EXPECT_EQ(s.failures.load(), 10u);
}

TEST(HealthState, PassiveDownIsRetriedAfterTheWindow) {
  BackendState s("a", 1);
  for (int i = 0; i < 3; ++i) s.passive_failure(100, kMaxFails, kWindowMs);
  ASSERT_FALSE(s.up.load());
  EXPECT_FALSE(s.passive_retry_due(100 + kWindowMs - 1, kWindowMs));
  EXPECT_TRUE(s.passive_retry_due(100 + kWindowMs, kWindowMs));
  EXPECT_TRUE(s.up.load());
  EXPECT_EQ(s.came_back_ms(), 100 + kWindowMs);
  EXPECT_FALSE(s.passive_retry_due(100 + 3 * kWindowMs, kWindowMs));  // nothing to retry
  // The window starts afresh: one failure does not take it down again.
  EXPECT_FALSE(s.passive_failure(100 + kWindowMs + 1, kMaxFails, kWindowMs));
  EXPECT_TRUE(s.up.load());
}

TEST(HealthState, FallConsecutiveFailedChecksMarkDownRiseMarkUp) {
  BackendState s("a", 1);
  EXPECT_FALSE(s.check_result(false, "refused", 2, 3, 0));
  EXPECT_FALSE(s.check_result(false, "refused", 2, 3, 0));
  EXPECT_FALSE(s.check_result(true, "HTTP 200", 2, 3, 0));  // resets the failure run
  EXPECT_FALSE(s.check_result(false, "refused", 2, 3, 0));
  EXPECT_FALSE(s.check_result(false, "refused", 2, 3, 0));
  EXPECT_TRUE(s.up.load());
  EXPECT_TRUE(s.check_result(false, "HTTP 503", 2, 3, 0));
  EXPECT_FALSE(s.up.load());
  EXPECT_EQ(s.last_check(), "HTTP 503");
  EXPECT_FALSE(s.check_result(true, "HTTP 200", 2, 3, 500));
  EXPECT_TRUE(s.check_result(true, "HTTP 200", 2, 3, 700));
  EXPECT_TRUE(s.up.load());
  EXPECT_EQ(s.came_back_ms(), 700);
  EXPECT_EQ(s.checks_ok.load(), 3u);
  EXPECT_EQ(s.checks_failed.load(), 5u);
}

TEST(HealthState, PassiveDownNeedsRiseGoodChecksAndNoTimedRetry) {
  BackendState s("a", 1);
  EXPECT_FALSE(s.check_result(true, "HTTP 200", 2, 3, 0));  // already up: no transition
  for (int i = 0; i < 3; ++i) s.passive_failure(1000, kMaxFails, kWindowMs);
  ASSERT_FALSE(s.up.load());
  EXPECT_FALSE(s.check_result(true, "HTTP 200", 2, 3, 1100));  // the earlier success does not count
  EXPECT_TRUE(s.check_result(true, "HTTP 200", 2, 3, 1200));
  EXPECT_TRUE(s.up.load());
}

TEST(HealthState, DownByChecksIsNotRetriedByTheClock) {
  BackendState s("a", 1);
  for (int i = 0; i < 3; ++i) s.check_result(false, "refused", 2, 3, 0);
  ASSERT_FALSE(s.up.load());
  EXPECT_FALSE(s.passive_retry_due(10 * kWindowMs, kWindowMs));
  EXPECT_FALSE(s.up.load());
}

// Times are readings of an injected clock with an arbitrary epoch: 0 is a time like any other,
// never a stand-in for "never".
TEST(HealthState, ClockZeroIsAnOrdinaryTime) {
  BackendState s("a", 1);
  EXPECT_EQ(s.came_back_ms(), std::nullopt);  // up since first seen: nothing to ramp
  for (int i = 0; i < 3; ++i) s.passive_failure(0, kMaxFails, kWindowMs);
  ASSERT_FALSE(s.up.load());
  EXPECT_EQ(s.came_back_ms(), std::nullopt);  // down, and never came back yet
  EXPECT_FALSE(s.passive_retry_due(kWindowMs - 1, kWindowMs));
  EXPECT_TRUE(s.passive_retry_due(kWindowMs, kWindowMs));  // downed at 0 is still retried
  for (int i = 0; i < 3; ++i) s.check_result(false, "refused", 1, 3, 0);
  ASSERT_FALSE(s.up.load());
  EXPECT_TRUE(s.check_result(true, "HTTP 200", 1, 3, 0));
  EXPECT_EQ(s.came_back_ms(), 0);  // came back at 0, which is not "never"
}

TEST(HealthState, NegativeAndHugeTimesWork) {
  constexpr int64_t kFar = int64_t{1} << 62;
  for (const int64_t t0 : {-kWindowMs * 5, kFar}) {
    BackendState s("a", 1);
    for (int i = 0; i < 3; ++i) s.passive_failure(t0, kMaxFails, kWindowMs);
    ASSERT_FALSE(s.up.load());
    EXPECT_FALSE(s.passive_retry_due(t0 + kWindowMs - 1, kWindowMs));
    EXPECT_TRUE(s.passive_retry_due(t0 + kWindowMs, kWindowMs));
    EXPECT_EQ(s.came_back_ms(), t0 + kWindowMs);
  }
}

}  // namespace
}  // namespace limpet::balancer
