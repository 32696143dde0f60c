#include "limpet/balancer/ring.hpp"

#include <algorithm>

namespace limpet::balancer {

uint64_t backend_name_hash(std::string_view name) { return hash64(name, seed::kName); }

bool is_prime(uint64_t n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (uint64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

Result<std::unique_ptr<Ring>> Ring::build(config::RingKind kind, std::vector<RingMember> members,
                                          uint32_t table_size) {
  if (members.empty()) return Result<std::unique_ptr<Ring>>::fail("ring: no backends");
  if (members.size() > kMaxMembers) {
    return Result<std::unique_ptr<Ring>>::fail("ring: more than " + std::to_string(kMaxMembers) + " backends");
  }
  if (kind == config::RingKind::kMaglev && (!is_prime(table_size) || table_size < members.size())) {
    return Result<std::unique_ptr<Ring>>::fail("ring: maglev table size " + std::to_string(table_size) +
                                               " must be a prime of at least the number of backends");
  }
  std::unique_ptr<Ring> ring(new Ring());
  ring->kind_ = kind;
  for (auto& m : members) {
    m.weight = std::max<uint32_t>(m.weight, 1);
    ring->name_part_.push_back(hash_pair_right(backend_name_hash(m.name)));
    ring->inv_weight_.push_back(1.0 / m.weight);
    ring->equal_weights_ = ring->equal_weights_ && m.weight == members.front().weight;
  }
  if (kind == config::RingKind::kMaglev) ring->fill_maglev(members, table_size);
  return ring;
}

// Maglev population. Member i walks permutation p_i(j) = (offset_i + j * skip_i) mod M, which
// visits every slot once because M is prime and 0 < skip_i < M. Members take turns claiming the
// next free slot of their permutation; weights use a credit per member: each round member i earns
// w_i and claims one slot per w_max earned, so after R rounds it holds floor(R * w_i / w_max)
// slots (+-1): shares follow the weights to within one slot. The fill stops when the table is full.
void Ring::fill_maglev(const std::vector<RingMember>& members, uint32_t m) {
  const size_t n = members.size();
  constexpr uint16_t kEmpty = 0xffff;  // kMaxMembers < 0xffff, so no member has this index
  table_.assign(m, kEmpty);
  std::vector<uint64_t> cursor(n);
  std::vector<uint64_t> skip(n);
  std::vector<uint64_t> credit(n, 0);
  uint32_t w_max = 0;
  for (size_t i = 0; i < n; ++i) {
    cursor[i] = hash64(members[i].name, seed::kOffset) % m;
    skip[i] = hash64(members[i].name, seed::kSkip) % (m - 1) + 1;
    w_max = std::max(w_max, members[i].weight);
  }
  // Turns go in name order, not config order: reordering backends in the file must not remap
  // keys, and two instances whose files list them differently must still agree.
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return members[a].name < members[b].name; });
  uint64_t filled = 0;
  while (filled < m) {
    for (size_t i : order) {
      if (filled == m) break;
      credit[i] += members[i].weight;
      if (credit[i] < w_max) continue;
      credit[i] -= w_max;
      while (table_[cursor[i]] != kEmpty) {
        cursor[i] += skip[i];
        if (cursor[i] >= m) cursor[i] -= m;
      }
      table_[cursor[i]] = static_cast<uint16_t>(i);
      ++filled;
    }
  }
}

std::vector<uint32_t> Ring::slot_counts() const {
  std::vector<uint32_t> counts(kind_ == config::RingKind::kMaglev ? name_part_.size() : 0, 0);
  for (uint16_t i : table_) ++counts[i];
  return counts;
}

}  // namespace limpet::balancer
