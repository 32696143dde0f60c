// The consistent-hash ring of one upstream: maps a 64-bit key hash to a backend index. Built on
// the main thread from backend *names* and weights only (never addresses), so the same config
// gives the same ring on every limpet instance; immutable afterwards, lookups from any thread.
#pragma once

#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "limpet/balancer/hash.hpp"
#include "limpet/config/config.hpp"
#include "limpet/util/result.hpp"

namespace limpet::balancer {

struct RingMember {
  std::string name;
  uint32_t weight = 1;
};

// Two algorithms behind one interface (config `ring`):
//  - Maglev (Eisenbud et al., NSDI 2016): a prime-sized table filled by taking turns, each member
//    walking its own permutation of the slots (offset and skip derived from two hashes of its
//    name); a member of weight w takes w turns for every turn of weight 1. Lookup is one
//    multiply and one load. Slot shares differ by at most one slot from the weights.
//  - Rendezvous (highest random weight, weighted with Schindelhauer's -w/ln(u) score): no table,
//    O(members) per lookup, and a rebuild without a member moves only that member's keys.
//
// Skipping ineligible backends (down, draining, excluded, over the bounded load) does not rebuild
// anything: every key has its own deterministic preference order and the first eligible entry
// wins. For Maglev that order is the table slot at hash_pair(key, k) for probe k = 0, 1, ...;
// for rendezvous it is the score order. A key therefore moves only when the backend it was on
// becomes ineligible, and the moved keys land on the others in proportion to their weights.
class Ring {
 public:
  // Probes of the Maglev table before falling back to rendezvous among the eligible members.
  // With a fraction f of the table ineligible, a key needs the fallback with probability f^32:
  // never in practice until nearly everything is down, and the fallback is still deterministic
  // and minimal-moving.
  static constexpr int kMaxProbes = 32;
  static constexpr uint32_t kMaxMembers = 65535;  // table entries are uint16_t

  // Fails on an empty member list, a Maglev table_size that is not a prime or is smaller than the
  // number of members, or more than kMaxMembers.
  static Result<std::unique_ptr<Ring>> build(config::RingKind kind, std::vector<RingMember> members,
                                             uint32_t table_size);

  config::RingKind kind() const { return kind_; }
  size_t size() const { return name_part_.size(); }
  uint32_t table_size() const { return static_cast<uint32_t>(table_.size()); }

  // The key's first choice regardless of eligibility.
  int lookup(uint64_t key_hash) const {
    if (kind_ == config::RingKind::kMaglev) return table_[fast_range(key_hash, table_.size())];
    if (equal_weights_) return rendezvous_equal(key_hash);
    return rendezvous(key_hash, [](int) { return true; });
  }

  // The first member of the key's preference order for which eligible(index) is true; -1 when
  // no member is eligible. `eligible` must be a pure function of the index for one call.
  template <typename Eligible>
  int lookup(uint64_t key_hash, const Eligible& eligible) const {
    if (kind_ == config::RingKind::kMaglev) {
      const int first = table_[fast_range(key_hash, table_.size())];
      if (eligible(first)) return first;
      for (int k = 1; k < kMaxProbes; ++k) {
        const int i = table_[fast_range(hash_pair(key_hash, static_cast<uint64_t>(k)), table_.size())];
        if (eligible(i)) return i;
      }
    }
    return rendezvous(key_hash, eligible);
  }

  // Table slots owned by each member (Maglev; empty for rendezvous). For tests and benchmarks.
  std::vector<uint32_t> slot_counts() const;

 private:
  Ring() = default;
  void fill_maglev(const std::vector<RingMember>& members, uint32_t m);

  // Weighted rendezvous: the member with the smallest -ln(u)/w wins, u uniform in (0, 1) from
  // the (key, member) pair. That is the first arrival among exponential clocks of rate w, so
  // member i wins with probability w_i / sum(w). With equal weights the ordering of the raw
  // hash is the same ordering, and the logarithm is skipped.
  template <typename Eligible>
  int rendezvous(uint64_t key_hash, const Eligible& eligible) const {
    int best = -1;
    const uint64_t left = hash_pair_left(key_hash);
    if (equal_weights_) {
      uint64_t best_score = 0;
      for (size_t i = 0; i < name_part_.size(); ++i) {
        const uint64_t s = hash_pair_join(left, name_part_[i]);
        if ((best < 0 || s > best_score) && eligible(static_cast<int>(i))) {
          best = static_cast<int>(i);
          best_score = s;
        }
      }
      return best;
    }
    double best_score = 0;
    for (size_t i = 0; i < name_part_.size(); ++i) {
      const uint64_t x = hash_pair_join(left, name_part_[i]);
      const double u = (static_cast<double>(x >> 11) + 0.5) * 0x1.0p-53;  // (0, 1), never 0
      const double s = -std::log(u) * inv_weight_[i];
      if ((best < 0 || s < best_score) && eligible(static_cast<int>(i))) {
        best = static_cast<int>(i);
        best_score = s;
      }
    }
    return best;
  }

  // Everyone eligible, equal weights: the highest score wins. Written without branches on the
  // scores, which are random and would mispredict about once per lookup.
  int rendezvous_equal(uint64_t key_hash) const {
    const uint64_t left = hash_pair_left(key_hash);
    uint64_t best_score = hash_pair_join(left, name_part_[0]);
    size_t best = 0;
    for (size_t i = 1; i < name_part_.size(); ++i) {
      const uint64_t s = hash_pair_join(left, name_part_[i]);
      const bool better = s > best_score;
      best_score = better ? s : best_score;
      best = better ? i : best;
    }
    return static_cast<int>(best);
  }

  config::RingKind kind_ = config::RingKind::kMaglev;
  std::vector<uint16_t> table_;      // Maglev: slot -> member index
  std::vector<uint64_t> name_part_;  // hash_pair_right(name hash) per member: rendezvous scores
  std::vector<double> inv_weight_;
  bool equal_weights_ = true;
};

// Stable hash of a backend name: ring points and cookie tokens derive from it.
uint64_t backend_name_hash(std::string_view name);

bool is_prime(uint64_t n);

}  // namespace limpet::balancer
