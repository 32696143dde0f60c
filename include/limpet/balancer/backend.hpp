// Backend identity and shared state. BackendState lives in a process-wide registry keyed by
// backend *name*, so health, drain flags and session counts survive config reloads. Fields are
// atomics: workers, the health checker (main thread) and the admin API touch them concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace limpet::balancer {

struct BackendState {
  explicit BackendState(std::string n, uint32_t i) : name(std::move(n)), id(i) {}
  const std::string name;
  const uint32_t id;  // stable for the process lifetime, never reused; affinity entries store it

  std::atomic<bool> up{true};          // health: false = down (no traffic at all)
  std::atomic<bool> draining{false};   // admin/reload: no new sessions, known sessions continue
  std::atomic<bool> disabled{false};   // admin: no traffic at all
  std::atomic<int64_t> in_flight{0};   // requests being proxied + open tunnels (least_conn)
  std::atomic<int64_t> tunnels{0};     // open WebSocket tunnels
  // Tunnels of sessions that also have an affinity entry (an Engine.IO session upgraded to
  // WebSocket): one session, not two, in the live counts.
  std::atomic<int64_t> upgraded_sessions{0};
  std::atomic<int64_t> sessions{0};    // affinity table entries pointing here, learned here
  // Entries read from the session store: sessions another instance learned (and counts).
  std::atomic<int64_t> shared_sessions{0};
  // The other instances' live sessions here, as they last shared them through the session
  // store (store::FleetCounts): placement weighs the fleet's load, not this instance's alone.
  std::atomic<int64_t> fleet_sessions{0};
  // New sessions placed here and not yet learned, established or failed (Engine.IO handshakes,
  // WebSocket upgrades): a burst reads the same counts before any session exists and would herd
  // onto one node; counting them from placement spreads it. Held by the proxy's BackendLease.
  std::atomic<int64_t> placing{0};
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> failures{0};   // connect errors / timeouts (passive health)
  // Responses to requests routed here, by status class (index status/100, 1..5): the backend's
  // own, and the 502/504 limpet answers when it fails.
  std::atomic<uint64_t> responses_by_class[6]{};
  void count_response(int status) {
    responses_by_class[status >= 100 && status < 600 ? status / 100 : 0].fetch_add(1, std::memory_order_relaxed);
  }

  std::atomic<uint64_t> checks_ok{0};      // active health checks passed
  std::atomic<uint64_t> checks_failed{0};  // active health checks failed

  // Health transitions. Each returns true when the call changed `up`; the caller logs it (with
  // the reason it knows). Times are milliseconds of the process's one Clock (util/clock.hpp),
  // passed in rather than read here so that tests state them.
  //
  // Passive (design §6): connect failures and read timeouts seen by the proxy. `max_fails`
  // within `window_ms` mark the backend down; 0 disables passive marking.
  bool passive_failure(int64_t now_ms, uint32_t max_fails, int64_t window_ms);
  // Without active checks a passively downed backend is tried again once `window_ms` passed
  // (as nginx's fail_timeout does); with active checks only `rise` good checks bring it back.
  bool passive_retry_due(int64_t now_ms, int64_t window_ms);
  // Active: one check result; `rise` consecutive successes mark a down backend up, `fall`
  // consecutive failures an up one down. `detail` is kept for the status page.
  bool check_result(bool ok, std::string_view detail, int rise, int fall, int64_t now_ms);
  // The upstream's active checks were switched off: a backend they took down has nobody left to
  // bring it back, so it returns to service (a passively downed one still waits for its retry).
  bool checks_stopped(int64_t now_ms);

  // When the backend last came back up after being down: slow start ramps from here. nullopt
  // while it has been up ever since it was first seen (no ramp), whatever the clock reads.
  std::optional<int64_t> came_back_ms() const {
    if (!came_back_.load(std::memory_order_acquire)) return std::nullopt;
    return came_back_ms_.load(std::memory_order_relaxed);
  }
  std::string last_check() const;  // "" before the first active check

  // New sessions avoid a backend whose last new session failed there (a failure status, no
  // answer within handshake_timeout) for `for_ms`, or until one succeeds there; placement still
  // takes it when no other backend accepts new sessions. Lock-free: placement reads it per pick.
  void new_session_failed(int64_t now_ms, int64_t for_ms) {
    failing_until_ms_.store(now_ms + for_ms, std::memory_order_relaxed);
    failing_.store(true, std::memory_order_release);
  }
  void new_session_succeeded() {
    if (failing_.load(std::memory_order_relaxed)) failing_.store(false, std::memory_order_relaxed);
  }
  bool failing_new_sessions(int64_t now_ms) const {
    return failing_.load(std::memory_order_acquire) && now_ms < failing_until_ms_.load(std::memory_order_relaxed);
  }

  bool usable() const { return up.load(std::memory_order_relaxed) && !disabled.load(std::memory_order_relaxed); }
  bool accepts_new() const { return usable() && !draining.load(std::memory_order_relaxed); }
  // This instance's live sessions (design §5): affinity entries it learned + open tunnels (an
  // upgraded session once), plus handshakes on their way. What it shares with the fleet.
  int64_t own_sessions() const {
    return sessions.load(std::memory_order_relaxed) + tunnels.load(std::memory_order_relaxed) -
           upgraded_sessions.load(std::memory_order_relaxed) + placing.load(std::memory_order_relaxed);
  }
  // As placement sees them: its own plus the rest of the fleet's.
  int64_t live_sessions() const { return own_sessions() + fleet_sessions.load(std::memory_order_relaxed); }

 private:
  bool set_up(bool value, int64_t now_ms);  // health_mu_ held

  // Written under health_mu_, read lock-free by placement on every worker: the time first, then
  // the flag with release, so a reader that sees the flag sees a time that was really set.
  std::atomic<int64_t> came_back_ms_{0};
  std::atomic<bool> came_back_{false};
  // The same publication order for the new-session penalty.
  std::atomic<int64_t> failing_until_ms_{0};
  std::atomic<bool> failing_{false};
  mutable std::mutex health_mu_;  // failures and checks are rare: a mutex is cheap enough
  uint32_t window_failures_ = 0;
  int64_t window_start_ms_ = 0;  // meaningful while window_failures_ > 0
  std::optional<int64_t> passive_down_ms_;  // when passive marking took the backend down, if it did
  int consecutive_ok_ = 0;
  int consecutive_failed_ = 0;
  std::string last_check_;
};

// Process-wide; any thread. get_or_create is called while building a snapshot (main thread);
// by_id / find are used when an affinity entry names a backend. States are never freed while the
// registry lives and ids are never reused, so a BackendState* from find() stays valid.
class BackendRegistry {
 public:
  BackendRegistry();
  ~BackendRegistry();
  BackendRegistry(const BackendRegistry&) = delete;
  BackendRegistry& operator=(const BackendRegistry&) = delete;

  std::shared_ptr<BackendState> get_or_create(const std::string& name);
  std::shared_ptr<BackendState> by_id(uint32_t id) const;
  // Lock-free (two acquire loads): the affinity table calls it for every session it counts,
  // from every worker, and a mutex here would serialise them. nullptr for an unknown id.
  BackendState* find(uint32_t id) const;

 private:
  // ids index a two-level table of pointers published with release stores: chunks are
  // allocated on demand and never moved, so readers need no lock. 1024 x 1024 ids is more
  // backends than a process will ever name; beyond it find() answers nullptr (counted nowhere).
  static constexpr uint32_t kChunkBits = 10;
  static constexpr uint32_t kChunkSize = 1u << kChunkBits;
  static constexpr uint32_t kChunks = 1024;
  using Chunk = std::atomic<BackendState*>[kChunkSize];

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<BackendState>> by_name_;
  std::atomic<Chunk*> chunks_[kChunks] = {};
  uint32_t next_id_ = 1;
};

}  // namespace limpet::balancer
