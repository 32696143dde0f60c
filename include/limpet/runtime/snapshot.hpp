// An immutable, complete view of the running configuration: the parsed config, every upstream
// built (addresses resolved, rings filled) and a generation number. Built on the main thread,
// published to workers by pointer; a request keeps the snapshot it started with alive.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/backend.hpp"
#include "limpet/balancer/sticky_key.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/config/config.hpp"
#include "limpet/proxy/context.hpp"
#include "limpet/store/session_store.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/util/clock.hpp"
#include "limpet/util/result.hpp"

namespace limpet::runtime {

struct Snapshot {
  std::shared_ptr<const config::Config> config;
  std::map<std::string, std::shared_ptr<const balancer::Upstream>> upstreams;
  uint64_t generation = 0;
  // TLS contexts by listener name and by upstream name; absent = plaintext.
  std::map<std::string, std::shared_ptr<const tls::ServerContext>> listener_tls;
  std::map<std::string, std::shared_ptr<const tls::ClientContext>> upstream_tls;
  // [session_store] with its TLS context; null without one. Read at start only: a reload that
  // changes it is told so (store::same_settings) and the running store stays.
  std::shared_ptr<const store::StoreSetup> session_store;
  // trusted_proxies of the listeners with proxy_protocol, by listener name.
  std::map<std::string, balancer::CidrSet> listener_trusted;
  // Every listener's counters, by name (owned by SharedState).
  std::map<std::string, proxy::ListenerCounters*> listener_counters;

  const balancer::Upstream* upstream(const std::string& name) const {
    auto it = upstreams.find(name);
    return it == upstreams.end() ? nullptr : it->second.get();
  }
  const tls::ServerContext* server_tls(const std::string& listener) const { return find(listener_tls, listener); }
  const tls::ClientContext* client_tls(const std::string& upstream) const { return find(upstream_tls, upstream); }
  proxy::ListenerCounters* counters(const std::string& listener) const {
    auto it = listener_counters.find(listener);
    return it == listener_counters.end() ? nullptr : it->second;
  }
  const balancer::CidrSet* trusted_proxies(const std::string& listener) const {
    auto it = listener_trusted.find(listener);
    return it == listener_trusted.end() ? nullptr : &it->second;
  }

 private:
  template <typename T>
  static const T* find(const std::map<std::string, std::shared_ptr<const T>>& by_name, const std::string& name) {
    auto it = by_name.find(name);
    return it == by_name.end() ? nullptr : it->second.get();
  }
};

// Process-wide state that outlives snapshots: the clock, backend states, the affinity table and
// the listeners' counters.
struct SharedState {
  // The one clock of health, slow start and affinity: the upstreams, the affinity table and the
  // health checker are all given this one, so their times compare.
  const Clock& clock = steady_clock();
  balancer::BackendRegistry registry;
  std::shared_ptr<balancer::AffinityTable> affinity;
  store::StoreStats store_stats;  // every worker's session store and the fleet counts
  // By listener name; a listener a reload removes keeps its entry (its connections may live on,
  // and a listener added back continues its counts). Main thread only: snapshots hand out pointers.
  std::map<std::string, std::unique_ptr<proxy::ListenerCounters>> listener_counters;
};

// Backends a reload removed that still drain, by upstream name (see balancer::Upstream::build).
using RetiredBackends = std::map<std::string, std::vector<config::BackendConfig>>;

Result<std::shared_ptr<const Snapshot>> build_snapshot(std::shared_ptr<const config::Config> config,
                                                      SharedState& shared, uint64_t generation,
                                                      const RetiredBackends& retired = {});

}  // namespace limpet::runtime
