#include "limpet/balancer/placement.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "limpet/balancer/hash.hpp"

namespace limpet::balancer {
namespace {

// Longest weighted round-robin schedule kept; beyond it the weights are scaled down (the ratio
// error stays under one part in a thousand for the weights config allows).
constexpr uint64_t kMaxSchedule = 1 << 16;

int64_t live_of(const Candidate& c) { return std::max<int64_t>(c.state->live_sessions(), 0); }
int64_t conns_of(const Candidate& c) {
  return std::max<int64_t>(c.state->in_flight.load(std::memory_order_relaxed), 0);
}

// a/wa < b/wb without division (loads and weights, even in permille, are small enough not to
// overflow).
bool less_loaded(int64_t a, uint64_t wa, int64_t b, uint64_t wb) {
  return a * static_cast<int64_t>(wb) < b * static_cast<int64_t>(wa);
}

std::vector<uint16_t> smooth_schedule(const std::vector<Candidate>& candidates) {
  std::vector<uint64_t> w;
  uint64_t g = 0;
  for (const auto& c : candidates) {
    w.push_back(std::max<uint32_t>(c.weight, 1));
    g = std::gcd(g, w.back());
  }
  uint64_t total = 0;
  for (auto& x : w) total += (x /= g);
  if (total > kMaxSchedule) {
    const double scale = static_cast<double>(kMaxSchedule) / static_cast<double>(total);
    total = 0;
    for (auto& x : w) total += (x = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(x * scale))));
  }
  // Smooth weighted round robin: every step each backend earns its weight and the richest one
  // is picked and pays the total. Heavier backends come up more often, but spread out.
  std::vector<int64_t> current(w.size(), 0);
  std::vector<uint16_t> schedule;
  schedule.reserve(total);
  for (uint64_t step = 0; step < total; ++step) {
    size_t best = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      current[i] += static_cast<int64_t>(w[i]);
      if (current[i] > current[best]) best = i;
    }
    current[best] -= static_cast<int64_t>(total);
    schedule.push_back(static_cast<uint16_t>(best));
  }
  return schedule;
}

}  // namespace

bool excluded(std::span<const int> exclude, int i) {
  return std::find(exclude.begin(), exclude.end(), i) != exclude.end();
}

LoadBound::LoadBound(std::span<const Candidate> candidates, std::span<const int> exclude, double factor) {
  if (!(factor > 1.0)) return;
  int64_t live = 0;
  uint64_t weight = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    if (!c.state->accepts_new() || excluded(exclude, static_cast<int>(i))) continue;
    live += live_of(c);
    weight += c.weight;
  }
  if (weight == 0) return;
  per_weight_ = factor * static_cast<double>(live + 1) / static_cast<double>(weight);
}

bool LoadBound::allows(const Candidate& c) const {
  if (per_weight_ <= 0) return true;
  return static_cast<double>(live_of(c)) < std::ceil(per_weight_ * c.weight);
}

Placement::Placement(config::Balance policy, std::vector<Candidate> candidates, double balance_factor,
                     int64_t slow_start_ms, const Clock& clock)
    : policy_(policy),
      candidates_(std::move(candidates)),
      factor_(balance_factor),
      slow_start_ms_(slow_start_ms),
      clock_(clock) {
  if (policy_ == config::Balance::kRoundRobin) schedule_ = smooth_schedule(candidates_);
}

uint64_t Placement::weight_permille(size_t i, int64_t now_ms) const {
  const Candidate& c = candidates_[i];
  const uint64_t full = uint64_t{c.weight} * 1000;
  if (slow_start_ms_ <= 0) return full;
  const std::optional<int64_t> came_back = c.state->came_back_ms();
  if (!came_back) return full;  // never down: nothing to ramp, however young the clock
  const int64_t up_for = now_ms - *came_back;
  if (up_for >= slow_start_ms_) return full;
  const int64_t permille = 100 + 900 * std::max<int64_t>(up_for, 0) / slow_start_ms_;
  return uint64_t{c.weight} * static_cast<uint64_t>(permille);
}

int Placement::place(std::span<const int> exclude, uint64_t random) const {
  const int64_t now = clock_.now_ms();
  auto base = [&](int i) {
    return candidates_[static_cast<size_t>(i)].state->accepts_new() && !excluded(exclude, i);
  };
  // A backend failing new sessions gets them only when no other one accepts any.
  const int i = place_among(random, now, exclude, [&](int j) {
    return base(j) && !candidates_[static_cast<size_t>(j)].state->failing_new_sessions(now);
  });
  return i >= 0 ? i : place_among(random, now, exclude, base);
}

template <typename Ok>
int Placement::place_among(uint64_t random, int64_t now_ms, std::span<const int> exclude, const Ok& ok) const {
  if (factor_ > 1.0) {
    const LoadBound bound(candidates_, exclude, factor_);
    const int i = pick(random, now_ms, [&](int j) { return ok(j) && bound.allows(candidates_[static_cast<size_t>(j)]); });
    if (i >= 0) return i;
  }
  return pick(random, now_ms, ok);
}

template <typename Ok>
int Placement::pick(uint64_t random, int64_t now_ms, const Ok& ok) const {
  switch (policy_) {
    case config::Balance::kRoundRobin:
      return pick_round_robin(ok);
    case config::Balance::kLeastConn:
      return pick_least(random, now_ms, ok, false);
    case config::Balance::kLeastSessions:
      return pick_least(random, now_ms, ok, true);
    case config::Balance::kTwoChoices:
      return pick_two(random, now_ms, ok);
  }
  return -1;
}

template <typename Ok>
int Placement::pick_round_robin(const Ok& ok) const {
  if (schedule_.empty()) return -1;
  const uint64_t start = rotation_.fetch_add(1, std::memory_order_relaxed);
  for (size_t k = 0; k < schedule_.size(); ++k) {
    const int i = schedule_[(start + k) % schedule_.size()];
    if (ok(i)) return i;
  }
  return -1;
}

// Lowest load per weight. Equal loads are common (an idle cluster, a burst of handshakes that
// arrives before any of them is learned), so the scan starts at a rotating, randomised offset:
// the first of several tied backends differs from call to call and from worker to worker.
template <typename Ok>
int Placement::pick_least(uint64_t random, int64_t now_ms, const Ok& ok, bool by_sessions) const {
  const size_t n = candidates_.size();
  if (n == 0) return -1;
  const uint64_t rot = rotation_.fetch_add(1, std::memory_order_relaxed);
  const size_t start = fast_range(mix64(random + rot), n);
  int best = -1;
  int64_t best_load = 0;
  uint64_t best_weight = 1;
  for (size_t k = 0; k < n; ++k) {
    const int i = static_cast<int>((start + k) % n);
    const Candidate& c = candidates_[static_cast<size_t>(i)];
    if (!ok(i)) continue;
    const int64_t load = by_sessions ? live_of(c) : conns_of(c);
    const uint64_t weight = weight_permille(static_cast<size_t>(i), now_ms);
    if (best < 0 || less_loaded(load, weight, best_load, best_weight)) {
      best = i;
      best_load = load;
      best_weight = weight;
    }
  }
  return best;
}

// Power of two choices (Mitzenmacher): two distinct backends drawn with probability proportional
// to weight, the one with fewer live sessions per weight wins. Needs no coordination between
// workers and cannot herd a burst onto one node the way a stale "least" can.
template <typename Ok>
int Placement::pick_two(uint64_t random, int64_t now_ms, const Ok& ok) const {
  uint64_t total = 0;
  int only = -1;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    if (!ok(static_cast<int>(i))) continue;
    total += weight_permille(i, now_ms);
    only = static_cast<int>(i);
  }
  if (total == 0) return -1;
  auto draw = [&](uint64_t r, int skip, uint64_t sum) {
    uint64_t x = fast_range(r, sum);
    for (size_t i = 0; i < candidates_.size(); ++i) {
      if (static_cast<int>(i) == skip || !ok(static_cast<int>(i))) continue;
      const uint64_t w = weight_permille(i, now_ms);
      if (x < w) return static_cast<int>(i);
      x -= w;
    }
    return only;  // unreachable unless a backend changed state during the walk
  };
  const uint64_t r = mix64(random ^ rotation_.fetch_add(1, std::memory_order_relaxed));
  const int a = draw(r, -1, total);
  const uint64_t weight_a = weight_permille(static_cast<size_t>(a), now_ms);
  const uint64_t rest = total - weight_a;
  if (rest == 0) return a;
  const int b = draw(mix64(r + 1), a, rest);
  const uint64_t weight_b = weight_permille(static_cast<size_t>(b), now_ms);
  const Candidate& ca = candidates_[static_cast<size_t>(a)];
  const Candidate& cb = candidates_[static_cast<size_t>(b)];
  return less_loaded(live_of(cb), weight_b, live_of(ca), weight_a) ? b : a;
}

}  // namespace limpet::balancer
