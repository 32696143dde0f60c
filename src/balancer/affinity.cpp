#include "limpet/balancer/affinity.hpp"

#include <algorithm>
#include <cstring>
#include <limits>

#include "limpet/balancer/hash.hpp"

namespace limpet::balancer {
namespace {

constexpr size_t kNotFound = std::numeric_limits<size_t>::max();
constexpr size_t kInitialIndex = 16;
constexpr size_t kSweepChunk = 4096;
// Shards are only worth having when each holds a useful number of sessions; small caps (tests,
// `limpet -t`) get one shard so the cap is exact.
constexpr size_t kMinPerShard = 1024;

uint64_t next_random(uint64_t& state) {
  state += 0x9e3779b97f4a7c15ULL;
  return mix64(state);
}

}  // namespace

AffinityTable::AffinityTable(BackendRegistry& registry, size_t max_entries, const Clock& clock)
    : registry_(registry), clock_(clock) {
  size_t n = 1;
  if (max_entries == 0) {
    n = kMaxShards;
  } else {
    while (n < kMaxShards && max_entries / (n * 2) >= kMinPerShard) n *= 2;
  }
  per_shard_cap_ = max_entries == 0 ? 0 : (max_entries + n - 1) / n;
  shards_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    auto s = std::make_unique<Shard>();
    s->index.assign(kInitialIndex, 0);
    s->rng = 0x5eed0000ULL + i;
    shards_.push_back(std::move(s));
  }
}

AffinityTable::~AffinityTable() { clear(); }

void AffinityTable::count_session(uint32_t backend_id, Origin origin, int64_t delta) const {
  if (BackendState* state = registry_.find(backend_id)) {
    (origin == Origin::kLocal ? state->sessions : state->shared_sessions).fetch_add(delta, std::memory_order_relaxed);
  }
}

size_t AffinityTable::find_slot(const Shard& s, uint64_t hash, std::string_view key) {
  const size_t mask = s.index.size() - 1;
  for (size_t slot = hash & mask;; slot = (slot + 1) & mask) {
    const uint32_t v = s.index[slot];
    if (v == 0) return kNotFound;
    const Entry& e = s.entries[v - 1];
    if (e.hash == hash && e.len == key.size() && std::memcmp(e.key_data(), key.data(), key.size()) == 0) {
      return slot;
    }
  }
}

void AffinityTable::grow_index(Shard& s) {
  std::vector<uint32_t> index(s.index.size() * 2, 0);
  const size_t mask = index.size() - 1;
  for (size_t i = 0; i < s.entries.size(); ++i) {
    size_t slot = s.entries[i].hash & mask;
    while (index[slot] != 0) slot = (slot + 1) & mask;
    index[slot] = static_cast<uint32_t>(i + 1);
  }
  s.index.swap(index);
}

void AffinityTable::insert_new(Shard& s, uint64_t hash, std::string_view key, uint32_t backend,
                               int64_t deadline, Origin origin) {
  if ((s.entries.size() + 1) * 2 > s.index.size()) grow_index(s);
  Entry e{};
  e.hash = hash;
  e.deadline = deadline;
  e.backend = backend;
  e.len = static_cast<uint16_t>(key.size());
  e.origin = origin;
  e.stored_s = now_s();
  if (key.size() <= kInlineKey) {
    std::memcpy(e.key, key.data(), key.size());
  } else {
    char* copy = new char[key.size()];
    std::memcpy(copy, key.data(), key.size());
    e.set_big(copy);
  }
  s.entries.push_back(e);
  const size_t mask = s.index.size() - 1;
  size_t slot = hash & mask;
  while (s.index[slot] != 0) slot = (slot + 1) & mask;
  s.index[slot] = static_cast<uint32_t>(s.entries.size());
  count_session(backend, origin, +1);
}

// Linear probing with backward-shift deletion (no tombstones, so probe lengths never degrade),
// then the dense vector's last entry moves into the hole and its index slot is re-pointed.
void AffinityTable::remove_at_slot(Shard& s, size_t slot) {
  const size_t mask = s.index.size() - 1;
  const uint32_t victim = s.index[slot] - 1;
  count_session(s.entries[victim].backend, s.entries[victim].origin, -1);
  if (s.entries[victim].len > kInlineKey) delete[] s.entries[victim].big();

  size_t hole = slot;
  for (size_t j = (hole + 1) & mask; s.index[j] != 0; j = (j + 1) & mask) {
    const size_t home = s.entries[s.index[j] - 1].hash & mask;
    // Move j back into the hole when the hole lies on j's probe path [home, j).
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      s.index[hole] = s.index[j];
      hole = j;
    }
  }
  s.index[hole] = 0;

  const uint32_t last = static_cast<uint32_t>(s.entries.size() - 1);
  if (victim != last) {
    s.entries[victim] = s.entries[last];
    size_t k = s.entries[victim].hash & mask;
    while (s.index[k] != last + 1) k = (k + 1) & mask;
    s.index[k] = victim + 1;
  }
  s.entries.pop_back();
}

void AffinityTable::evict_one(Shard& s, int64_t now) {
  if (s.entries.empty()) return;
  size_t best = 0;
  int64_t best_deadline = std::numeric_limits<int64_t>::max();
  for (size_t i = 0; i < kEvictionSample; ++i) {
    const size_t pick = fast_range(next_random(s.rng), s.entries.size());
    if (s.entries[pick].deadline < best_deadline) {
      best = pick;
      best_deadline = s.entries[pick].deadline;
    }
  }
  const Entry& e = s.entries[best];
  const size_t slot = find_slot(s, e.hash, std::string_view(e.key_data(), e.len));
  // A sampled entry that had already expired is an expiration the sweep had not reached yet.
  if (best_deadline <= now) {
    ++s.expirations;
  } else {
    ++s.evictions;
  }
  remove_at_slot(s, slot);
}

std::optional<uint32_t> AffinityTable::lookup(std::string_view sid, Millis ttl, bool* store_refresh_due) {
  const uint64_t h = hash64(sid, seed::kSid);
  const int64_t t = now();
  Shard& s = shard_for(h);
  std::lock_guard lock(s.mu);
  const size_t slot = find_slot(s, h, sid);
  if (slot == kNotFound) {
    ++s.misses;
    return std::nullopt;
  }
  Entry& e = s.entries[s.index[slot] - 1];
  if (e.deadline <= t) {
    ++s.expirations;
    ++s.misses;
    remove_at_slot(s, slot);
    return std::nullopt;
  }
  ++s.hits;
  e.deadline = t + ttl.count();
  if (store_refresh_due != nullptr) {
    const uint32_t t_s = static_cast<uint32_t>(t / 1000);
    *store_refresh_due = (t_s - e.stored_s) * int64_t{1000} >= ttl.count() / 2;
    if (*store_refresh_due) e.stored_s = t_s;
  }
  return e.backend;
}

void AffinityTable::learn(std::string_view sid, uint32_t backend_id, Millis ttl, Origin origin) {
  if (sid.empty() || sid.size() > kMaxKey) return;
  const uint64_t h = hash64(sid, seed::kSid);
  const int64_t t = now();
  Shard& s = shard_for(h);
  std::unique_lock lock(s.mu);
  ++s.learned;
  const size_t slot = find_slot(s, h, sid);
  if (slot != kNotFound) {
    Entry& e = s.entries[s.index[slot] - 1];
    if (e.backend != backend_id || e.origin != origin) {
      count_session(e.backend, e.origin, -1);
      count_session(backend_id, origin, +1);
      e.backend = backend_id;
      e.origin = origin;
    }
    e.deadline = t + ttl.count();
    e.stored_s = static_cast<uint32_t>(t / 1000);
  } else {
    if (per_shard_cap_ != 0 && s.entries.size() >= per_shard_cap_) evict_one(s, t);
    insert_new(s, h, sid, backend_id, t + ttl.count(), origin);
  }
  lock.unlock();
  if (LearnObserver* o = observer_.load(std::memory_order_acquire)) o->on_learn(sid, backend_id, ttl, origin);
}

void AffinityTable::for_each_live(
    const std::function<void(std::string_view, uint32_t, Millis, Origin)>& f) const {
  for (const auto& sp : shards_) {
    std::lock_guard lock(sp->mu);
    const int64_t t = now();
    for (const Entry& e : sp->entries) {
      if (e.deadline > t) f(std::string_view(e.key_data(), e.len), e.backend, Millis(e.deadline - t), e.origin);
    }
  }
}

bool AffinityTable::restore(std::string_view sid, uint32_t backend_id, Millis remaining, Origin origin) {
  if (sid.empty() || sid.size() > kMaxKey || remaining.count() <= 0) return false;
  const uint64_t h = hash64(sid, seed::kSid);
  const int64_t t = now();
  Shard& s = shard_for(h);
  std::lock_guard lock(s.mu);
  if (find_slot(s, h, sid) != kNotFound) return false;
  if (per_shard_cap_ != 0 && s.entries.size() >= per_shard_cap_) evict_one(s, t);
  insert_new(s, h, sid, backend_id, t + remaining.count(), origin);
  return true;
}

bool AffinityTable::forget(std::string_view sid) {
  const uint64_t h = hash64(sid, seed::kSid);
  Shard& s = shard_for(h);
  std::lock_guard lock(s.mu);
  const size_t slot = find_slot(s, h, sid);
  if (slot == kNotFound) return false;
  ++s.forgotten;
  remove_at_slot(s, slot);
  return true;
}

bool AffinityTable::forget_if(std::string_view sid, uint32_t backend_id) {
  const uint64_t h = hash64(sid, seed::kSid);
  Shard& s = shard_for(h);
  std::lock_guard lock(s.mu);
  const size_t slot = find_slot(s, h, sid);
  if (slot == kNotFound || s.entries[s.index[slot] - 1].backend != backend_id) return false;
  ++s.forgotten;
  remove_at_slot(s, slot);
  return true;
}

size_t AffinityTable::expire_some(size_t budget) {
  std::lock_guard sweep_lock(sweep_mu_);
  const int64_t t = now();
  size_t removed = 0;
  // Visit at most every shard once per call, so a small budget on an empty table returns.
  for (size_t visited = 0; budget > 0 && visited < shards_.size(); ++visited) {
    Shard& s = *shards_[sweep_shard_];
    std::lock_guard lock(s.mu);
    const size_t chunk = std::min(budget, kSweepChunk);
    size_t examined = 0;
    while (examined < chunk && s.sweep < s.entries.size()) {
      ++examined;
      const Entry& e = s.entries[s.sweep];
      if (e.deadline > t) {
        ++s.sweep;
        continue;
      }
      // The last entry moves into this position: look at the same position again.
      ++s.expirations;
      ++removed;
      remove_at_slot(s, find_slot(s, e.hash, std::string_view(e.key_data(), e.len)));
    }
    budget -= examined;
    if (s.sweep >= s.entries.size()) {
      s.sweep = 0;
      sweep_shard_ = (sweep_shard_ + 1) % shards_.size();
    } else {
      break;  // budget exhausted inside this shard: resume here next time
    }
  }
  return removed;
}

size_t AffinityTable::expire() {
  std::lock_guard sweep_lock(sweep_mu_);
  const int64_t t = now();
  size_t removed = 0;
  for (auto& sp : shards_) {
    Shard& s = *sp;
    size_t pos = 0;
    bool more = true;
    while (more) {
      std::lock_guard lock(s.mu);
      for (size_t examined = 0; examined < kSweepChunk && pos < s.entries.size(); ++examined) {
        const Entry& e = s.entries[pos];
        if (e.deadline > t) {
          ++pos;
          continue;
        }
        ++s.expirations;
        ++removed;
        remove_at_slot(s, find_slot(s, e.hash, std::string_view(e.key_data(), e.len)));
      }
      more = pos < s.entries.size();
      s.sweep = std::min(s.sweep, s.entries.size());
    }
  }
  return removed;
}

void AffinityTable::clear() {
  for (auto& sp : shards_) {
    Shard& s = *sp;
    std::lock_guard lock(s.mu);
    for (const Entry& e : s.entries) {
      count_session(e.backend, e.origin, -1);
      if (e.len > kInlineKey) delete[] e.big();
    }
    s.entries.clear();
    std::fill(s.index.begin(), s.index.end(), 0);
    s.sweep = 0;
  }
}

AffinityTable::Stats AffinityTable::stats() const {
  Stats st;
  for (const auto& sp : shards_) {
    Shard& s = *sp;
    std::lock_guard lock(s.mu);
    st.entries += s.entries.size();
    st.hits += s.hits;
    st.misses += s.misses;
    st.evictions += s.evictions;
    st.expirations += s.expirations;
    st.learned += s.learned;
    st.forgotten += s.forgotten;
  }
  st.unparsable_handshakes = unparsable_.load(std::memory_order_relaxed);
  return st;
}

size_t AffinityTable::size() const {
  size_t n = 0;
  for (const auto& sp : shards_) {
    std::lock_guard lock(sp->mu);
    n += sp->entries.size();
  }
  return n;
}

size_t AffinityTable::memory_bytes() const {
  size_t bytes = sizeof(*this);
  for (const auto& sp : shards_) {
    std::lock_guard lock(sp->mu);
    bytes += sizeof(Shard) + sp->entries.capacity() * sizeof(Entry) + sp->index.capacity() * sizeof(uint32_t);
    for (const Entry& e : sp->entries) {
      if (e.len > kInlineKey) bytes += e.len;
    }
  }
  return bytes;
}

}  // namespace limpet::balancer
