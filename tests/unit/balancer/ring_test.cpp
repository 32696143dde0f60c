// Ring properties on fixed seeds: balance, weights, minimal movement when a backend is skipped
// or removed, determinism. Properties only; timings live in bench/ring_bench.cpp.
#include "limpet/balancer/ring.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

namespace limpet::balancer {
namespace {

using config::RingKind;

std::vector<RingMember> members(int n) {
  std::vector<RingMember> m;
  for (int i = 0; i < n; ++i) m.push_back({"backend-" + std::to_string(i + 1), 1});
  return m;
}

// Hashes of distinct string keys, reproducible: the ring sees what routing feeds it.
std::vector<uint64_t> keys(size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> out;
  out.reserve(count);
  for (size_t i = 0; i < count; ++i) out.push_back(hash64("room-" + std::to_string(rng())));
  return out;
}

std::unique_ptr<Ring> build(RingKind kind, std::vector<RingMember> m, uint32_t size = 65537) {
  auto r = Ring::build(kind, std::move(m), size);
  EXPECT_TRUE(r.is_ok()) << (r.is_ok() ? "" : r.message());
  return std::move(*r);
}

double max_over_mean(const std::vector<size_t>& counts) {
  size_t total = 0;
  for (size_t c : counts) total += c;
  return static_cast<double>(*std::max_element(counts.begin(), counts.end())) /
         (static_cast<double>(total) / static_cast<double>(counts.size()));
}

// Enough keys that sampling noise alone stays far below the 2% bound: 40 000 keys per backend
// puts one standard deviation at 0.5%, so max/mean > 1.02 would be a 4-sigma event.
size_t keys_for(int n) { return std::max<size_t>(200000, 40000 * static_cast<size_t>(n)); }

class RingKinds : public ::testing::TestWithParam<RingKind> {};

TEST(Ring, RejectsBadInput) {
  EXPECT_FALSE(Ring::build(RingKind::kMaglev, {}, 65537).is_ok());
  EXPECT_FALSE(Ring::build(RingKind::kMaglev, members(3), 65536).is_ok());  // not prime
  EXPECT_FALSE(Ring::build(RingKind::kMaglev, members(3), 2).is_ok());      // smaller than 3
  EXPECT_TRUE(Ring::build(RingKind::kRendezvous, members(3), 0).is_ok());  // no table
}

TEST(Ring, MaglevSlotSharesDifferByAtMostOneSlot) {
  for (int n : {1, 2, 3, 5, 10, 50, 1000}) {
    auto ring = build(RingKind::kMaglev, members(n));
    auto counts = ring->slot_counts();
    ASSERT_EQ(counts.size(), static_cast<size_t>(n));
    auto [lo, hi] = std::minmax_element(counts.begin(), counts.end());
    EXPECT_LE(*hi - *lo, 1u) << n << " backends";
  }
}

TEST_P(RingKinds, KeysBalancedWithinTwoPercent) {
  for (int n : {3, 5, 10, 50}) {
    auto ring = build(GetParam(), members(n));
    std::vector<size_t> counts(static_cast<size_t>(n));
    for (uint64_t k : keys(keys_for(n), 1000 + static_cast<uint64_t>(n))) ++counts[static_cast<size_t>(ring->lookup(k))];
    EXPECT_LE(max_over_mean(counts), 1.02) << n << " backends";
  }
}

TEST_P(RingKinds, WeightsRespectedWithinTwoPercent) {
  std::vector<RingMember> m = {{"a", 1}, {"b", 2}, {"c", 3}, {"d", 4}, {"e", 10}};
  auto ring = build(GetParam(), m);
  const auto ks = keys(1000000, 7);
  std::vector<size_t> counts(m.size());
  for (uint64_t k : ks) ++counts[static_cast<size_t>(ring->lookup(k))];
  for (size_t i = 0; i < m.size(); ++i) {
    const double expected = static_cast<double>(ks.size()) * m[i].weight / 20.0;
    EXPECT_NEAR(static_cast<double>(counts[i]) / expected, 1.0, 0.02) << m[i].name;
  }
}

// A backend that is down (or draining, excluded, over its bound) is skipped: only its keys move,
// and they spread evenly over the others.
TEST_P(RingKinds, SkippingOneBackendMovesOnlyItsKeys) {
  for (int n : {3, 5, 10, 50}) {
    auto ring = build(GetParam(), members(n));
    const int down = n / 2;
    const auto ks = keys(keys_for(n), 2000 + static_cast<uint64_t>(n));
    size_t moved = 0;
    std::vector<size_t> landed(static_cast<size_t>(n));
    for (uint64_t k : ks) {
      const int before = ring->lookup(k);
      const int after = ring->lookup(k, [&](int i) { return i != down; });
      ASSERT_NE(after, down);
      if (before != down) {
        ASSERT_EQ(after, before);
      } else {
        ++moved;
        ++landed[static_cast<size_t>(after)];
      }
    }
    const double fraction = static_cast<double>(moved) / static_cast<double>(ks.size());
    EXPECT_LE(fraction, 1.1 / n) << n << " backends";
    landed.erase(landed.begin() + down);
    // Moved keys are few (1/n of the keys over n-1 backends): allow for their sampling noise.
    EXPECT_LE(max_over_mean(landed), n <= 10 ? 1.05 : 1.25) << n << " backends";
  }
}

// Keys that moved off a down backend stay where they went when a second one goes down.
TEST_P(RingKinds, SecondFailureDoesNotDisturbEarlierMoves) {
  auto ring = build(GetParam(), members(10));
  for (uint64_t k : keys(200000, 3)) {
    const int one = ring->lookup(k, [](int i) { return i != 2; });
    const int two = ring->lookup(k, [](int i) { return i != 2 && i != 7; });
    if (one != 7) {
      ASSERT_EQ(two, one);
    }
  }
}

TEST_P(RingKinds, NothingEligibleAndLastOneStanding) {
  auto ring = build(GetParam(), members(10));
  for (uint64_t k : keys(20000, 4)) {
    ASSERT_EQ(ring->lookup(k, [](int) { return false; }), -1);
    ASSERT_EQ(ring->lookup(k, [](int i) { return i == 6; }), 6);
  }
}

TEST(Ring, RendezvousRebuildWithoutOneMovesOnlyItsKeys) {
  for (int n : {3, 5, 10, 50}) {
    auto m = members(n);
    auto full = build(RingKind::kRendezvous, m);
    const int removed = n / 2;
    m.erase(m.begin() + removed);
    auto less = build(RingKind::kRendezvous, m);
    for (uint64_t k : keys(100000, 5)) {
      const int before = full->lookup(k);
      int after = less->lookup(k);
      if (after >= removed) ++after;  // indexes shift past the removed one
      if (before != removed) {
        ASSERT_EQ(after, before);
      }
    }
  }
}

// Maglev's known trade-off: rebuilding the table without a backend (a config change, unlike a
// backend going down) also moves a small share of other keys, because the fill is greedy.
// Bounded here so a regression shows; bench/ring_bench.cpp reports the figures.
TEST(Ring, MaglevRebuildWithoutOneMovesFewOtherKeys) {
  for (int n : {3, 5, 10, 50}) {
    auto m = members(n);
    auto full = build(RingKind::kMaglev, m);
    const int removed = n / 2;
    m.erase(m.begin() + removed);
    auto less = build(RingKind::kMaglev, m);
    const auto ks = keys(keys_for(n), 6);
    size_t moved = 0;
    size_t others = 0;
    for (uint64_t k : ks) {
      const int before = full->lookup(k);
      int after = less->lookup(k);
      if (after >= removed) ++after;
      if (after != before) {
        ++moved;
        if (before != removed) ++others;
      }
    }
    const double total = static_cast<double>(ks.size());
    EXPECT_LE(moved / total, 1.3 / n) << n << " backends";
    EXPECT_LE(others / total, 0.01) << n << " backends";
  }
}

TEST_P(RingKinds, PureFunctionOfNamesAndWeights) {
  auto m = members(7);
  m[3].weight = 3;
  auto a = build(GetParam(), m);
  std::reverse(m.begin(), m.end());  // same backends listed in another order
  auto b = build(GetParam(), m);
  for (uint64_t k : keys(50000, 8)) {
    ASSERT_EQ(a->lookup(k), 6 - b->lookup(k));
  }
}

TEST(Ring, KeyedByNameNotPosition) {
  // Adding a backend to a Maglev ring moves about 1/(n+1) of the keys, all of them to it.
  auto m = members(10);
  auto before = build(RingKind::kMaglev, m);
  m.push_back({"backend-new", 1});
  auto after = build(RingKind::kMaglev, m);
  const auto ks = keys(400000, 9);
  size_t to_new = 0;
  size_t elsewhere = 0;
  for (uint64_t k : ks) {
    const int a = before->lookup(k);
    const int b = after->lookup(k);
    if (a == b) continue;
    if (b == 10) {
      ++to_new;
    } else {
      ++elsewhere;
    }
  }
  EXPECT_NEAR(static_cast<double>(to_new) / ks.size(), 1.0 / 11, 0.005);
  EXPECT_LE(static_cast<double>(elsewhere) / ks.size(), 0.01);
}

INSTANTIATE_TEST_SUITE_P(All, RingKinds, ::testing::Values(RingKind::kMaglev, RingKind::kRendezvous),
                         [](const auto& info) {
                           return std::string(info.param == RingKind::kMaglev ? "Maglev" : "Rendezvous");
                         });

TEST(Hash, DistinctInputsHashApart) {
  EXPECT_EQ(hash64(""), hash64(std::string_view()));
  EXPECT_NE(hash64("a"), hash64(std::string_view("a\0", 2)));
  EXPECT_NE(hash64("abc", 1), hash64("abc", 2));
  // Every XXH3 length class (0, 1-3, 4-8, 9-16, 17-128, 129-240, >240) hashes distinct strings
  // apart. The fixed values are in golden_test.cpp.
  std::vector<uint64_t> seen;
  std::string s;
  for (int i = 0; i < 300; ++i) {
    seen.push_back(hash64(s));
    s.push_back(static_cast<char>('a' + i % 26));
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end());
}

TEST(Hash, BitsAreBalanced) {
  // Each output bit is set for about half of a run of similar keys.
  constexpr int kKeys = 100000;
  int ones[64] = {};
  for (int i = 0; i < kKeys; ++i) {
    const uint64_t h = hash64("sid-" + std::to_string(i));
    for (int b = 0; b < 64; ++b) ones[b] += static_cast<int>((h >> b) & 1);
  }
  for (int b = 0; b < 64; ++b) EXPECT_NEAR(ones[b], kKeys / 2, kKeys / 100) << "bit " << b;
}

}  // namespace
}  // namespace limpet::balancer
