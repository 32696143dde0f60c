// Backend identity and shared state. BackendState lives in a process-wide registry keyed by
// backend *name*, so health, drain flags and session counts survive config reloads. Fields are
// atomics: workers, the health checker (main thread) and the admin API touch them concurrently.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
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
  std::atomic<int64_t> sessions{0};    // affinity table entries pointing here
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> failures{0};   // connect errors / timeouts (passive health)

  bool usable() const { return up.load(std::memory_order_relaxed) && !disabled.load(std::memory_order_relaxed); }
  bool accepts_new() const { return usable() && !draining.load(std::memory_order_relaxed); }
  // Live sessions as placement sees them (design §5): affinity entries + open tunnels.
  int64_t live_sessions() const {
    return sessions.load(std::memory_order_relaxed) + tunnels.load(std::memory_order_relaxed);
  }
};

// Process-wide; any thread. get_or_create is called while building a snapshot (main thread);
// by_id is used when an affinity entry names a backend.
class BackendRegistry {
 public:
  std::shared_ptr<BackendState> get_or_create(const std::string& name);
  std::shared_ptr<BackendState> by_id(uint32_t id) const;

 private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<BackendState>> by_name_;
  std::unordered_map<uint32_t, std::shared_ptr<BackendState>> by_id_;
  uint32_t next_id_ = 1;
};

}  // namespace limpet::balancer
