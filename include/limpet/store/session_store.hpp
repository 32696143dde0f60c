// The session store as one worker sees it (design §11): learned Engine.IO sessions shared with
// the other limpet instances through Redis, on the worker's own connection.
//   key   <key_prefix>sid:<upstream>:<sid>   value: the backend's name (never its address)
//   publish  SET key name PX ttl       a handshake response waits for it (learn before release)
//   lookup   GET key                   a request whose sid this instance does not know waits
//   refresh  PEXPIRE key ttl           at most once per session_ttl/2 per session, no wait
//   forget   DEL key                   the session's WebSocket closed, no wait
// When the store is unreachable every call answers at once that it did not ask (0): the caller
// routes on what it knows, as without a store. Unknown sids are remembered briefly (negative
// cache), and lookups in flight are bounded per worker: a flood of random sids costs at most one
// lookup each and never more than kMaxLookupsInFlight at a time. Owning worker only; the
// counters are process-wide.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "limpet/config/config.hpp"
#include "limpet/store/redis_client.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/util/histogram.hpp"

namespace limpet::store {

enum class LookupResult : uint8_t { kHit, kMiss, kNegative, kShed, kUnavailable, kTimeout, kError };
inline constexpr size_t kLookupResults = 7;
const char* to_string(LookupResult r);

enum class PublishResult : uint8_t { kStored, kUnavailable, kTimeout, kError };
inline constexpr size_t kPublishResults = 4;
const char* to_string(PublishResult r);

// Process-wide: every worker's store and the fleet counts write here, /metrics reads it.
struct StoreStats {
  std::atomic<uint64_t> lookups[kLookupResults]{};
  std::atomic<uint64_t> publishes[kPublishResults]{};
  std::atomic<uint64_t> refreshes{0};
  std::atomic<uint64_t> deletes{0};
  std::atomic<uint64_t> connection_errors{0};  // a connection went down or could not be opened
  Histogram latency;                           // round trip of publishes and lookups
  // Connections (one per worker, one for the fleet counts) not ready now; 0 = the store is up.
  std::atomic<int64_t> connections_down{0};
  std::atomic<int64_t> connections{0};
  std::atomic<bool> publish_incident{false};  // publishes are timing out (logged once, at its start)
  std::atomic<bool> ever_up{false};
  std::atomic<bool> told_unreachable{false};
  // A connection's transition. `counted_down` is that connection's own flag: every connection
  // starts counted as down. Logged once per process-wide transition: the first connection
  // down, the last one back, and once at start when the store cannot be reached.
  void connection_state(bool up, bool& counted_down, const std::string& where, const std::string& why,
                        const std::string& address);
  bool up() const { return connections.load(std::memory_order_relaxed) > 0 && connections_down.load(std::memory_order_relaxed) == 0; }
};

// Shared settings: what every worker's SessionStore (and the fleet counts) is built from.
struct StoreSetup {
  config::SessionStoreConfig config;
  std::shared_ptr<const tls::ClientContext> tls;  // null: plain TCP
  RedisSettings redis() const;
  std::string session_key(std::string_view upstream, std::string_view sid) const;
};

// Whether two [session_store] tables mean the same store and behaviour (where they were
// written aside): a reload that changes it must say the change waits for a restart.
bool same_settings(const config::SessionStoreConfig& a, const config::SessionStoreConfig& b);

class SessionStore {
 public:
  static constexpr size_t kMaxLookupsInFlight = 256;
  static constexpr size_t kMaxNegative = 4096;
  static constexpr uint64_t kNegativeTtlMs = 2000;

  using Published = std::function<void(PublishResult)>;
  // The backend's name when found (empty otherwise).
  using Found = std::function<void(LookupResult, std::string_view backend)>;

  SessionStore(uv_loop_t* loop, BufferPool* buffers, std::shared_ptr<const StoreSetup> setup,
               StoreStats* stats, tls::Counters* tls_counters, std::string where);
  ~SessionStore();
  void start();
  void stop();

  bool ready() const { return client_.ready(); }
  uint64_t lookup_timeout_ms() const;
  // The longest a caller waits for a callback (a lookup or a publish): its own deadline's base.
  uint64_t max_wait_ms() const;

  // 0: not written (store unreachable, or too busy) and `done` never runs — release now.
  uint64_t publish(std::string_view upstream, std::string_view sid, std::string_view backend,
                   config::Millis ttl, Published done);
  // 0: not asked (unreachable, known unknown, too many in flight) and `done` never runs. The
  // result (also for 0) is counted.
  uint64_t lookup(std::string_view upstream, std::string_view sid, Found done);
  void refresh(std::string_view upstream, std::string_view sid, config::Millis ttl);
  void forget(std::string_view upstream, std::string_view sid);
  // The waiter is gone: its callback does not run.
  void cancel(uint64_t ticket);

 private:
  bool negatively_cached(const std::string& key);
  void remember_unknown(std::string key);
  void count(LookupResult r) { stats_->lookups[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed); }
  void count(PublishResult r) { stats_->publishes[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed); }

  uv_loop_t* loop_;
  std::shared_ptr<const StoreSetup> setup_;
  StoreStats* stats_;
  RedisClient client_;
  std::unordered_map<std::string, uint64_t> negative_;  // key → loop time it is forgotten
  // Callers waiting, by the ticket they were given: a cancelled one is erased, and its command's
  // reply (or timeout) still ends the command here.
  std::unordered_map<uint64_t, Published> publishing_;
  std::unordered_map<uint64_t, Found> looking_up_;
  uint64_t next_ticket_ = 1;
  size_t lookups_in_flight_ = 0;
  std::string key_;  // scratch
};

}  // namespace limpet::store
