// Placement policies, bounded loads and slow start over hand-set backend states and a manual clock.
#include "limpet/balancer/placement.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <random>

#include "limpet/util/clock.hpp"

namespace limpet::balancer {
namespace {

using config::Balance;

class PlacementTest : public ::testing::Test {
 protected:
  // n backends named b0..b(n-1) with the given weights (default 1).
  std::vector<Candidate> make(std::vector<uint32_t> weights) {
    std::vector<Candidate> out;
    for (size_t i = 0; i < weights.size(); ++i) {
      states_.push_back(registry_.get_or_create("b" + std::to_string(next_name_++)));
      out.push_back({states_.back().get(), weights[i]});
    }
    return out;
  }
  BackendState& state(size_t i) { return *states_[i]; }

  // Places `n` sessions, each one counted as a live session right away (as a learned sid is).
  std::vector<int> place_sessions(const Placement& p, int n, uint64_t seed = 1) {
    std::mt19937_64 rng(seed);
    std::vector<int> counts(p.candidates().size());
    for (int k = 0; k < n; ++k) {
      const int i = p.place({}, rng());
      EXPECT_GE(i, 0);
      if (i < 0) break;
      ++counts[static_cast<size_t>(i)];
      state(static_cast<size_t>(i)).sessions.fetch_add(1);
    }
    return counts;
  }

  ManualClock clock_;
  BackendRegistry registry_;
  std::vector<std::shared_ptr<BackendState>> states_;
  int next_name_ = 0;  // fresh names: the registry keeps every state it ever made
};

TEST_F(PlacementTest, RoundRobinIsSmoothAndWeighted) {
  Placement p(Balance::kRoundRobin, make({5, 1, 1}), 0, 0, clock_);
  EXPECT_EQ(p.schedule(), (std::vector<uint16_t>{0, 0, 1, 0, 2, 0, 0}));
  std::vector<int> counts(3);
  for (int k = 0; k < 700; ++k) ++counts[static_cast<size_t>(p.place({}, 0))];
  EXPECT_EQ(counts, (std::vector<int>{500, 100, 100}));
}

TEST_F(PlacementTest, RoundRobinScheduleReducedByGcd) {
  Placement p(Balance::kRoundRobin, make({200, 400}), 0, 0, clock_);
  EXPECT_EQ(p.schedule().size(), 3u);
}

TEST_F(PlacementTest, OnlyBackendsAcceptingNewSessionsAndNotExcluded) {
  for (Balance b : {Balance::kRoundRobin, Balance::kLeastConn, Balance::kLeastSessions, Balance::kTwoChoices}) {
    states_.clear();
    Placement p(b, make({1, 1, 1, 1}), 0, 0, clock_);
    state(0).up = false;
    state(1).draining = true;
    state(3).disabled = true;
    for (int k = 0; k < 200; ++k) ASSERT_EQ(p.place({}, static_cast<uint64_t>(k) * 7919), 2);
    const int only = 2;
    EXPECT_EQ(p.place(std::span<const int>(&only, 1), 5), -1);
    state(2).up = false;
    EXPECT_EQ(p.place({}, 1), -1);
  }
}

TEST_F(PlacementTest, LeastSessionsPicksFewestPerWeight) {
  Placement p(Balance::kLeastSessions, make({1, 1, 2}), 0, 0, clock_);
  state(0).sessions = 10;
  state(1).sessions = 6;
  state(2).sessions = 10;  // 5 per weight unit
  for (int k = 0; k < 50; ++k) ASSERT_EQ(p.place({}, static_cast<uint64_t>(k)), 2);
  state(1).tunnels = -1;  // live = sessions + tunnels; negative transients are clamped
  state(1).sessions = 4;
  EXPECT_EQ(p.place({}, 0), 1);
}

TEST_F(PlacementTest, LeastSessionsSpreadsTiesAcrossSimultaneousPlacements) {
  // A burst that arrives before any handshake is learned sees equal counts every time.
  Placement p(Balance::kLeastSessions, make({1, 1, 1}), 0, 0, clock_);
  std::mt19937_64 rng(3);
  std::vector<int> counts(3);
  for (int k = 0; k < 3000; ++k) ++counts[static_cast<size_t>(p.place({}, rng()))];
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
}

TEST_F(PlacementTest, LeastSessionsEvenWhenLearnedAtOnce) {
  Placement p(Balance::kLeastSessions, make({1, 2, 3}), 0, 0, clock_);
  auto counts = place_sessions(p, 600);
  EXPECT_EQ(counts, (std::vector<int>{100, 200, 300}));
}

TEST_F(PlacementTest, LeastConnUsesInFlight) {
  Placement p(Balance::kLeastConn, make({1, 1}), 0, 0, clock_);
  state(0).in_flight = 3;
  state(0).sessions = 0;
  state(1).in_flight = 1;
  state(1).sessions = 100;
  EXPECT_EQ(p.place({}, 0), 1);
}

TEST_F(PlacementTest, TwoChoicesNeverPicksTheStrictlyBusiest) {
  Placement p(Balance::kTwoChoices, make({1, 1, 1}), 0, 0, clock_);
  state(0).sessions = 100;
  state(1).sessions = 10;
  state(2).sessions = 20;
  std::mt19937_64 rng(5);
  std::vector<int> counts(3);
  for (int k = 0; k < 3000; ++k) ++counts[static_cast<size_t>(p.place({}, rng()))];
  EXPECT_EQ(counts[0], 0);
  EXPECT_GT(counts[1], counts[2]);  // 1 wins every pair it is in: 2/3 of draws
  EXPECT_NEAR(counts[1], 2000, 150);
}

TEST_F(PlacementTest, TwoChoicesBalancesAndRespectsWeights) {
  Placement p(Balance::kTwoChoices, make({1, 1, 1, 1, 1}), 0, 0, clock_);
  auto counts = place_sessions(p, 5000);
  for (int c : counts) EXPECT_NEAR(c, 1000, 30);
  states_.clear();
  Placement w(Balance::kTwoChoices, make({1, 3}), 0, 0, clock_);
  auto wc = place_sessions(w, 4000, 9);
  EXPECT_NEAR(wc[0], 1000, 60);
  EXPECT_NEAR(wc[1], 3000, 60);
}

TEST_F(PlacementTest, BoundedLoadsSkipOverloadedBackend) {
  // Round robin alone would keep sending a third of new sessions to b0.
  Placement p(Balance::kRoundRobin, make({1, 1, 1}), 1.25, 0, clock_);
  state(0).sessions = 100;
  std::vector<int> counts(3);
  for (int k = 0; k < 60; ++k) {
    const int i = p.place({}, 0);
    ++counts[static_cast<size_t>(i)];
    state(static_cast<size_t>(i)).sessions.fetch_add(1);
  }
  // b0's cap is ceil(1.25 * (L + 1) / 3): still below 100 after 60 more sessions.
  EXPECT_EQ(counts[0], 0);
  EXPECT_EQ(counts[1] + counts[2], 60);
}

TEST_F(PlacementTest, BoundedLoadsCapEveryBackendAtFactorTimesMean) {
  for (Balance b : {Balance::kRoundRobin, Balance::kTwoChoices}) {
    states_.clear();
    Placement p(b, make({1, 1, 1, 1}), 1.1, 0, clock_);
    auto counts = place_sessions(p, 4000, 17);
    for (int c : counts) EXPECT_LE(c, static_cast<int>(1.1 * 1000) + 1);
  }
}

TEST_F(PlacementTest, LoadBoundMath) {
  auto c = make({1, 3});
  state(0).sessions = 10;
  state(1).sessions = 29;
  const LoadBound bound(c, {}, 1.5);  // per weight unit: 1.5 * (39 + 1) / 4 = 15
  EXPECT_TRUE(bound.bounded());
  EXPECT_TRUE(bound.allows(c[0]));   // 10 < 15
  EXPECT_TRUE(bound.allows(c[1]));   // 29 < 45
  state(0).sessions = 20;
  EXPECT_FALSE(LoadBound(c, {}, 1.5).allows(c[0]));  // cap ceil(1.5 * (49 + 1) / 4) = 19
  EXPECT_FALSE(LoadBound(c, {}, 0).bounded());
  EXPECT_TRUE(LoadBound(c, {}, 0).allows(c[0]));
}

// Slow start runs on the injected clock, whose epoch is arbitrary: each test below runs with the
// clock starting near zero (a host booted seconds ago, where "0 = never came back" read as "came
// back at boot" and ramped every backend) and far from it (a host up for years).
class SlowStartTest : public PlacementTest, public ::testing::WithParamInterface<int64_t> {
 protected:
  static constexpr int64_t kSlowStartMs = 600000;

  SlowStartTest() { clock_.set(GetParam()); }

  // Backend i fails its checks and comes back up at the clock's current time.
  void comes_back(size_t i) {
    const int64_t now = clock_.now_ms();
    for (int k = 0; k < 3; ++k) state(i).check_result(false, "refused", 1, 3, now);
    ASSERT_TRUE(state(i).check_result(true, "HTTP 200", 1, 3, now));
    ASSERT_EQ(state(i).came_back_ms(), now);
  }

  // Where least_sessions puts one new session while b0 holds 1000 sessions and b1 `b1_sessions`.
  // b0 at full weight (1000 permille): b1 wins exactly while b1_sessions < its permille.
  int place_one(const Placement& p, int64_t b1_sessions) {
    state(0).sessions = 1000;
    state(1).sessions = b1_sessions;
    return p.place({}, 1);
  }
};

// A backend that has just come back counts with 10% of its weight, so it takes a tenth of its
// share instead of every new session until it catches up.
TEST_P(SlowStartTest, RampsABackendThatCameBack) {
  auto cands = make({1, 1});
  Placement ramped(Balance::kLeastSessions, cands, 0, kSlowStartMs, clock_);
  Placement plain(Balance::kLeastSessions, cands, 0, 0, clock_);
  state(0).sessions = 100;
  comes_back(1);

  std::vector<int> counts = place_sessions(ramped, 110);
  // Live per weight evens out at b1 = 10% of b0: b0 ~ 100 + 10, b1 ~ 11.
  EXPECT_GE(counts[0], 85);
  EXPECT_LE(counts[1], 25);
  EXPECT_GE(counts[1], 5);
  // Without slow start the node that came back takes every session until it catches up.
  state(0).sessions = 100;
  state(1).sessions = 0;
  counts = place_sessions(plain, 100);
  EXPECT_EQ(counts[1], 100);
}

// The weight rises linearly with the injected clock, from 100 to 1000 permille: exact thresholds,
// read off where least_sessions puts the next session.
TEST_P(SlowStartTest, WeightRisesLinearlyWithTheClock) {
  auto cands = make({1, 1});
  Placement ramped(Balance::kLeastSessions, cands, 0, kSlowStartMs, clock_);
  comes_back(1);
  EXPECT_EQ(place_one(ramped, 99), 1);  // 10%: 99/100 < 1000/1000
  EXPECT_EQ(place_one(ramped, 101), 0);
  clock_.advance(kSlowStartMs / 2);  // 100 + 900 / 2 = 550 permille
  EXPECT_EQ(place_one(ramped, 549), 1);
  EXPECT_EQ(place_one(ramped, 551), 0);
  clock_.advance(kSlowStartMs / 2 - 1);  // one millisecond short of the end: 100 + 899 permille
  EXPECT_EQ(place_one(ramped, 998), 1);
  EXPECT_EQ(place_one(ramped, 1000), 0);
  clock_.advance(1);  // ramp over: full weight (equal loads would be a tie either side may win)
  EXPECT_EQ(place_one(ramped, 999), 1);
  EXPECT_EQ(place_one(ramped, 1001), 0);
}

// A backend that never went down is not ramped, however young the clock: b1, half way through
// its ramp (550 permille), is weighed against b0 at its full 1000.
TEST_P(SlowStartTest, IgnoresBackendsUpSinceStart) {
  auto cands = make({1, 1});
  Placement ramped(Balance::kLeastSessions, cands, 0, kSlowStartMs, clock_);
  EXPECT_EQ(state(0).came_back_ms(), std::nullopt);
  comes_back(1);
  clock_.advance(kSlowStartMs / 2);
  EXPECT_EQ(place_one(ramped, 549), 1);
  EXPECT_EQ(place_one(ramped, 551), 0);  // b0 ramped too would make this b1 (551/550 < 1000/550)
}

TEST_P(SlowStartTest, NeverDownBackendsShareEvenly) {
  auto cands = make({1, 1});
  Placement ramped(Balance::kTwoChoices, cands, 0, kSlowStartMs, clock_);
  const std::vector<int> counts = place_sessions(ramped, 1000);
  EXPECT_NEAR(counts[0], 500, 5);
}

// 0, 1 s and 1 min: a host booted moments ago, inside one ramp of the epoch; a day; 126 years;
// and 2^62 ms, as far from any epoch as the arithmetic allows.
INSTANTIATE_TEST_SUITE_P(ClockStarts, SlowStartTest,
                         ::testing::Values(int64_t{0}, int64_t{1000}, int64_t{60000}, int64_t{86400000},
                                           int64_t{4000000000000}, int64_t{1} << 62),
                         [](const auto& info) { return "At" + std::to_string(info.param) + "ms"; });

}  // namespace
}  // namespace limpet::balancer
