// Global placement (design §11): every instance shares its live session counts per backend
// through the session store, and reads the others', so least_sessions and the bounded loads
// weigh the fleet's sessions and not one instance's. Once a second, on the main loop:
//   SET  <prefix>fleet:<instance>  "<backend>\t<count>\n..."  PX 3000   (ours, gone if we die)
//   SADD <prefix>fleet <instance>;  SMEMBERS <prefix>fleet;  MGET the others' keys
// The others' counts, summed by backend name, go to BackendState::fleet_sessions. A member whose
// key has expired is dropped from the set; while the store is down the others' counts are
// forgotten (placement falls back to this instance's view rather than trusting stale numbers).
// Main loop only.
#pragma once

#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "limpet/balancer/backend.hpp"
#include "limpet/store/redis_client.hpp"
#include "limpet/store/session_store.hpp"

namespace limpet::store {

class FleetCounts {
 public:
  static constexpr uint64_t kPeriodMs = 1000;
  static constexpr uint64_t kKeyTtlMs = 3000;  // three missed periods and an instance is gone

  FleetCounts(uv_loop_t* loop, BufferPool* buffers, std::shared_ptr<const StoreSetup> setup, StoreStats* stats,
              tls::Counters* tls_counters, std::string instance);
  ~FleetCounts();
  FleetCounts(const FleetCounts&) = delete;
  FleetCounts& operator=(const FleetCounts&) = delete;

  // The backends to share and to update (every snapshot's, deduplicated by name).
  void set_backends(std::vector<std::shared_ptr<balancer::BackendState>> backends);
  void start();
  // Removes this instance's counts from the store (best effort) and closes the connection.
  void stop();
  const std::string& instance() const { return instance_; }

  // Pure parts, for tests: our value, and the others' values summed into the backends.
  static std::string encode(const std::vector<std::shared_ptr<balancer::BackendState>>& backends);
  static void apply(const std::vector<std::string>& others,
                    const std::vector<std::shared_ptr<balancer::BackendState>>& backends);

 private:
  static void on_tick_cb(uv_timer_t* t);
  void tick();
  void read_others(const Reply& members);
  void forget_others();

  uv_loop_t* loop_;
  std::shared_ptr<const StoreSetup> setup_;
  std::string instance_;
  std::string set_key_;  // <prefix>fleet
  std::string own_key_;  // <prefix>fleet:<instance>
  RedisClient client_;
  uv_timer_t* timer_ = nullptr;
  std::vector<std::shared_ptr<balancer::BackendState>> backends_;
  bool reading_ = false;  // a SMEMBERS/MGET round is on its way
};

}  // namespace limpet::store
