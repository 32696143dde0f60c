// Placement policies and bounded loads over hand-set backend states.
#include "limpet/balancer/placement.hpp"

#include <gtest/gtest.h>

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

  BackendRegistry registry_;
  std::vector<std::shared_ptr<BackendState>> states_;
  int next_name_ = 0;  // fresh names: the registry keeps every state it ever made
};

TEST_F(PlacementTest, RoundRobinIsSmoothAndWeighted) {
  Placement p(Balance::kRoundRobin, make({5, 1, 1}), 0);
  EXPECT_EQ(p.schedule(), (std::vector<uint16_t>{0, 0, 1, 0, 2, 0, 0}));
  std::vector<int> counts(3);
  for (int k = 0; k < 700; ++k) ++counts[static_cast<size_t>(p.place({}, 0))];
  EXPECT_EQ(counts, (std::vector<int>{500, 100, 100}));
}

TEST_F(PlacementTest, RoundRobinScheduleReducedByGcd) {
  Placement p(Balance::kRoundRobin, make({200, 400}), 0);
  EXPECT_EQ(p.schedule().size(), 3u);
}

TEST_F(PlacementTest, OnlyBackendsAcceptingNewSessionsAndNotExcluded) {
  for (Balance b : {Balance::kRoundRobin, Balance::kLeastConn, Balance::kLeastSessions, Balance::kTwoChoices}) {
    states_.clear();
    Placement p(b, make({1, 1, 1, 1}), 0);
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
  Placement p(Balance::kLeastSessions, make({1, 1, 2}), 0);
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
  Placement p(Balance::kLeastSessions, make({1, 1, 1}), 0);
  std::mt19937_64 rng(3);
  std::vector<int> counts(3);
  for (int k = 0; k < 3000; ++k) ++counts[static_cast<size_t>(p.place({}, rng()))];
  for (int c : counts) EXPECT_NEAR(c, 1000, 150);
}

TEST_F(PlacementTest, LeastSessionsEvenWhenLearnedAtOnce) {
  Placement p(Balance::kLeastSessions, make({1, 2, 3}), 0);
  auto counts = place_sessions(p, 600);
  EXPECT_EQ(counts, (std::vector<int>{100, 200, 300}));
}

TEST_F(PlacementTest, LeastConnUsesInFlight) {
  Placement p(Balance::kLeastConn, make({1, 1}), 0);
  state(0).in_flight = 3;
  state(0).sessions = 0;
  state(1).in_flight = 1;
  state(1).sessions = 100;
  EXPECT_EQ(p.place({}, 0), 1);
}

TEST_F(PlacementTest, TwoChoicesNeverPicksTheStrictlyBusiest) {
  Placement p(Balance::kTwoChoices, make({1, 1, 1}), 0);
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
  Placement p(Balance::kTwoChoices, make({1, 1, 1, 1, 1}), 0);
  auto counts = place_sessions(p, 5000);
  for (int c : counts) EXPECT_NEAR(c, 1000, 30);
  states_.clear();
  Placement w(Balance::kTwoChoices, make({1, 3}), 0);
  auto wc = place_sessions(w, 4000, 9);
  EXPECT_NEAR(wc[0], 1000, 60);
  EXPECT_NEAR(wc[1], 3000, 60);
}

TEST_F(PlacementTest, BoundedLoadsSkipOverloadedBackend) {
  // Round robin alone would keep sending a third of new sessions to b0.
  Placement p(Balance::kRoundRobin, make({1, 1, 1}), 1.25);
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
    Placement p(b, make({1, 1, 1, 1}), 1.1);
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

// Slow start: a backend that has just come back counts with 10% of its weight, so it takes a
// tenth of its share instead of every new session until it catches up.
TEST_F(PlacementTest, SlowStartRampsABackendThatCameBack) {
  constexpr int64_t kSlowStartMs = 600000;  // the ramp cannot move during the test
  auto cands = make({1, 1});
  Placement ramped(Balance::kLeastSessions, cands, 0, kSlowStartMs);
  Placement plain(Balance::kLeastSessions, cands, 0);
  state(0).sessions = 100;
  // b1 goes down and comes back up now.
  const int64_t now = monotonic_ms();
  for (int k = 0; k < 3; ++k) state(1).check_result(false, "refused", 1, 3, now);
  ASSERT_TRUE(state(1).check_result(true, "HTTP 200", 1, 3, now));

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

TEST_F(PlacementTest, SlowStartIgnoresBackendsUpSinceStart) {
  auto cands = make({1, 1});
  Placement ramped(Balance::kTwoChoices, cands, 0, 600000);
  const std::vector<int> counts = place_sessions(ramped, 1000);
  EXPECT_NEAR(counts[0], 500, 5);  // never went down: full weight, sessions even out
}

}  // namespace
}  // namespace limpet::balancer
