// Placement of a new session (no sid, no cookie, no hash key) and the bounded-load rule shared
// with the ring (design §5). Built with its Upstream on the main thread and immutable except for
// one atomic rotation counter; place() is called concurrently from every worker.
#pragma once

#include <atomic>
#include <cstdint>
#include <span>
#include <vector>

#include "limpet/balancer/backend.hpp"
#include "limpet/config/config.hpp"
#include "limpet/util/clock.hpp"

namespace limpet::balancer {

struct Candidate {
  const BackendState* state = nullptr;
  uint32_t weight = 1;
};

// Bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads"): a
// backend may take a new session only while live < ceil(factor * w * (L + 1) / W), where L and W
// are the live sessions and weights of the backends that accept new sessions. Counting the
// session being placed (+1) guarantees that some backend always has room when factor > 1.
class LoadBound {
 public:
  LoadBound() = default;  // unbounded
  LoadBound(std::span<const Candidate> candidates, std::span<const int> exclude, double factor);
  bool allows(const Candidate& c) const;
  bool bounded() const { return per_weight_ > 0; }

 private:
  double per_weight_ = 0;  // factor * (L + 1) / W; 0 = unbounded
};

// True when index i appears in `exclude` (backends already tried for this request).
bool excluded(std::span<const int> exclude, int i);

class Placement {
 public:
  // `slow_start_ms` > 0: a backend that came back up (BackendState::came_back_ms) less than that
  // ago on `clock` counts with a part of its weight, 10% rising linearly to 100% (least_conn,
  // least_sessions, two_choices). `clock` must be the one health transitions are stamped with,
  // and must outlive the placement.
  Placement(config::Balance policy, std::vector<Candidate> candidates, double balance_factor,
            int64_t slow_start_ms, const Clock& clock);

  // A backend that accepts new sessions, is not excluded and is under its bound, preferring
  // those not failing new sessions (BackendState::failing_new_sessions); -1 if none
  // accepts new sessions. If every candidate is over its bound (only possible when the loads
  // change under our feet) the bound is ignored rather than refusing the session.
  // `random` is the caller's per-request randomness (per-worker PRNG).
  int place(std::span<const int> exclude, uint64_t random) const;

  config::Balance policy() const { return policy_; }
  const std::vector<Candidate>& candidates() const { return candidates_; }
  double balance_factor() const { return factor_; }
  // The weighted round-robin order (smooth: weights 5,1,1 give a a b a c a a, not a a a a a b c).
  const std::vector<uint16_t>& schedule() const { return schedule_; }

 private:
  // Candidate i's weight in thousandths, ramped during slow start.
  uint64_t weight_permille(size_t i, int64_t now_ms) const;
  // Among the candidates `ok` takes: under the load bound if one is set, else without it.
  template <typename Ok>
  int place_among(uint64_t random, int64_t now_ms, std::span<const int> exclude, const Ok& ok) const;
  template <typename Ok>
  int pick(uint64_t random, int64_t now_ms, const Ok& ok) const;
  template <typename Ok>
  int pick_least(uint64_t random, int64_t now_ms, const Ok& ok, bool by_sessions) const;
  template <typename Ok>
  int pick_two(uint64_t random, int64_t now_ms, const Ok& ok) const;
  template <typename Ok>
  int pick_round_robin(const Ok& ok) const;

  config::Balance policy_;
  std::vector<Candidate> candidates_;
  double factor_;
  int64_t slow_start_ms_;
  const Clock& clock_;
  std::vector<uint16_t> schedule_;
  mutable std::atomic<uint64_t> rotation_{0};
};

}  // namespace limpet::balancer
