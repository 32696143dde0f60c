// The affinity table: Engine.IO session id -> backend (BackendState::id) + deadline, shared by
// every worker and upstream, owned outside the snapshots so it survives reloads (design §5).
// Thread-safe: lookups/learns/forgets come from any worker; expire() from the main thread's
// housekeeping timer; stats() from the admin/metrics code.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "limpet/balancer/backend.hpp"
#include "limpet/util/clock.hpp"

namespace limpet::balancer {

// Sharded open-addressing hash map. Why this shape:
//  - Contention: one client's polling GET and POST can land on different workers at once, and
//    every request of every session looks its sid up. 64 shards, each behind its own mutex,
//    keep the chance that two workers wait on each other small, and every critical section is a
//    hash probe plus a few stores (no allocation unless a shard grows or a sid is > 24 bytes).
//  - Memory: 1 M sessions must fit in well under 128 MB. Entries live in a dense vector
//    (48 bytes; sids up to 20 bytes inline — Engine.IO's are 20 —, longer ones on the heap) indexed by a uint32_t
//    linear-probing table kept at most half full: about 60 bytes per session.
//  - Eviction at the size cap samples 8 random entries of the shard and evicts the one with the
//    earliest deadline. Deadlines are last use + ttl, so that is an approximation of "least
//    recently used", i.e. the session most likely already gone, at O(1) cost and without the
//    extra list pointers (16+ bytes per entry) an exact LRU would need.
// The table keeps BackendState::sessions equal to the number of entries naming each backend
// (via BackendRegistry::find, lock-free), which is what least_sessions placement reads.
class AffinityTable {
 public:
  using Millis = std::chrono::milliseconds;

  static constexpr size_t kMaxShards = 64;
  static constexpr size_t kEvictionSample = 8;
  static constexpr size_t kInlineKey = 20;
  static constexpr size_t kMaxKey = 0xffff;  // longer sids are never learned

  // Where an entry came from. Sessions this instance learned from a handshake count in their
  // backend's `sessions` (and are what it shares with the fleet); those it read from the
  // session store were learned by another instance, which counts them, so they count in
  // `shared_sessions` and not twice.
  enum class Origin : uint8_t { kLocal, kStore };

  struct Stats {
    uint64_t entries = 0;
    uint64_t hits = 0;
    uint64_t misses = 0;
    uint64_t evictions = 0;    // removed by the size cap
    uint64_t expirations = 0;  // removed because their deadline passed
    uint64_t learned = 0;      // learn() calls (new, re-pointed or renewed)
    uint64_t forgotten = 0;    // removed by forget() / forget_if()
    uint64_t unparsable_handshakes = 0;
  };

  // max_entries 0 = unbounded. The cap is enforced per shard (max_entries / shards, rounded up),
  // so the table starts evicting slightly before max_entries when shards fill unevenly; small
  // caps use fewer shards so that they stay exact enough to test. Deadlines are on `clock` (the
  // process's one clock; tests inject a ManualClock). `registry` and `clock` must outlive the
  // table.
  AffinityTable(BackendRegistry& registry, size_t max_entries, const Clock& clock = steady_clock());
  ~AffinityTable();
  AffinityTable(const AffinityTable&) = delete;
  AffinityTable& operator=(const AffinityTable&) = delete;

  // The backend id stored for `sid`, its deadline pushed to now + ttl. A miss when unknown or
  // already past its deadline (then the entry is removed and counted as expired).
  // `store_refresh_due`, when given, is set when the session store last heard of this entry
  // (learn() or an earlier refresh) at least ttl/2 ago; the caller refreshes the store's TTL,
  // and the entry counts as refreshed from now.
  std::optional<uint32_t> lookup(std::string_view sid, Millis ttl, bool* store_refresh_due = nullptr);
  // Inserts or re-points `sid`; the deadline becomes now + ttl. Empty sids and sids longer than
  // kMaxKey are ignored.
  void learn(std::string_view sid, uint32_t backend_id, Millis ttl, Origin origin = Origin::kLocal);
  // Removes `sid`; true if it was there.
  bool forget(std::string_view sid);
  // Removes `sid` only if it still names `backend_id`: dropping the entry of a down backend must
  // not undo a concurrent learn() that already re-pointed it.
  bool forget_if(std::string_view sid, uint32_t backend_id);
  // Removes entries past their deadline, examining at most `budget` entries (resuming where the
  // previous call stopped). Returns how many were removed.
  size_t expire_some(size_t budget);
  // A full sweep, locking one shard at a time for at most 4096 entries.
  size_t expire();
  void note_unparsable_handshake() { unparsable_.fetch_add(1, std::memory_order_relaxed); }
  // Removes everything (session counts included).
  void clear();

  // --- binary upgrade hand-over (balancer/affinity_transfer, runtime/handover) ---------------
  // Told of every learn() after it took effect, outside the shard lock, on the learning thread
  // (any worker): the old process forwards sessions it learns while it drains.
  class LearnObserver {
   public:
    virtual void on_learn(std::string_view sid, uint32_t backend_id, Millis ttl, Origin origin) = 0;

   protected:
    ~LearnObserver() = default;
  };
  // nullptr stops the calls. The observer must outlive every learn() that may still see it.
  void set_learn_observer(LearnObserver* observer) { observer_.store(observer, std::memory_order_release); }
  // Every entry whose deadline has not passed, with the time it has left; one shard locked at
  // a time. `f` must not call back into the table.
  void for_each_live(const std::function<void(std::string_view sid, uint32_t backend_id, Millis remaining,
                                              Origin origin)>& f) const;
  // Adds an entry handed over by the old process, deadline now + remaining. An entry the table
  // already has wins (it is this process's own, at least as recent). False when not added.
  bool restore(std::string_view sid, uint32_t backend_id, Millis remaining, Origin origin);

  Stats stats() const;
  size_t size() const;
  size_t shards() const { return shards_.size(); }
  // Bytes held by the table's own structures (entries, index, long keys), for the benchmark.
  size_t memory_bytes() const;

 private:
  struct Entry {
    uint64_t hash;
    int64_t deadline;
    uint32_t backend;
    uint16_t len;
    Origin origin;
    uint8_t unused;
    // The sid itself when it fits, else a heap copy's pointer stored in these bytes (memcpy:
    // a pointer member would align the array to 8 and the entry to 56 bytes).
    char key[kInlineKey];
    uint32_t stored_s;  // clock seconds when the session store last heard of it (learn, refresh)
    char* big() const {
      char* p;
      std::memcpy(&p, key, sizeof p);
      return p;
    }
    void set_big(char* p) { std::memcpy(key, &p, sizeof p); }
    const char* key_data() const { return len <= kInlineKey ? key : big(); }
  };
  static_assert(sizeof(Entry) == 48);

  struct Shard {
    std::mutex mu;
    std::vector<Entry> entries;    // dense; removal moves the last entry into the hole
    std::vector<uint32_t> index;   // power-of-two slots; entry index + 1, 0 = empty
    size_t sweep = 0;              // expire_some's position in `entries`
    uint64_t rng = 0;              // eviction sampling
    uint64_t hits = 0, misses = 0, evictions = 0, expirations = 0, learned = 0, forgotten = 0;
  };

  // Top bits pick the shard, low bits the slot inside it: the two stay independent.
  Shard& shard_for(uint64_t hash) { return *shards_[(hash >> 58) & (shards_.size() - 1)]; }
  int64_t now() const { return clock_.now_ms(); }

  // All below: caller holds the shard's mutex.
  static size_t find_slot(const Shard& s, uint64_t hash, std::string_view key);  // index slot or SIZE_MAX
  void insert_new(Shard& s, uint64_t hash, std::string_view key, uint32_t backend, int64_t deadline,
                  Origin origin);
  void remove_at_slot(Shard& s, size_t slot);
  void evict_one(Shard& s, int64_t now);
  static void grow_index(Shard& s);
  void count_session(uint32_t backend_id, Origin origin, int64_t delta) const;
  uint32_t now_s() const { return static_cast<uint32_t>(now() / 1000); }

  BackendRegistry& registry_;
  const Clock& clock_;
  std::vector<std::unique_ptr<Shard>> shards_;
  size_t per_shard_cap_ = 0;  // 0 = unbounded
  size_t sweep_shard_ = 0;    // expire_some: main thread only
  std::mutex sweep_mu_;
  std::atomic<uint64_t> unparsable_{0};
  std::atomic<LearnObserver*> observer_{nullptr};
};

}  // namespace limpet::balancer
