// What a client connection needs from its surroundings: the worker's shared services (loop,
// buffers, upstream pool, randomness, counters, shutdown state) and the listener it came from
// (its config and upstream, kept alive by the snapshot they belong to). Owning worker only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "limpet/balancer/sticky_key.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/config/config.hpp"
#include "limpet/proxy/access_log.hpp"
#include "limpet/proxy/graveyard.hpp"
#include "limpet/proxy/upstream_pool.hpp"
#include "limpet/store/session_store.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "limpet/util/histogram.hpp"

namespace limpet::proxy {

class ClientConnection;

// Why a proxy_protocol listener closed a connection before any HTTP (index into
// WorkerCounters::proxy_protocol_rejected, the `reason` label of its metric).
enum class ProxyReject : uint8_t { kUntrusted, kMalformed, kTimeout };
constexpr size_t kProxyRejectReasons = 3;

// Per-worker counters; the admin layer sums them over workers (relaxed atomics: written by the
// owning worker, read by the scraper).
struct WorkerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> rejected{0};  // over max_connections
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> responses_by_class[6]{};  // index status/100
  std::atomic<uint64_t> tunnels_opened{0};
  std::atomic<uint64_t> tunnels_closed_cleanly{0};  // both sides answered our Close frame
  std::atomic<uint64_t> ws_messages_to_backend{0};
  std::atomic<uint64_t> ws_messages_to_client{0};
  std::atomic<uint64_t> ws_messages_too_big{0};  // tunnels closed with 1009 (max_message_size)
  std::atomic<uint64_t> ws_protocol_errors{0};   // tunnels closed with 1002 (a malformed frame)
  std::atomic<uint64_t> retries{0};
  // Clients that closed (or half-closed, without ignore_client_abort) while their request was
  // being proxied: logged as 499 before any response byte, the upstream connection closed.
  std::atomic<uint64_t> client_aborts{0};
  // Requests sent again on a new connection because the pooled one closed before any response.
  std::atomic<uint64_t> stale_resends{0};
  // Pooled connections passed over for a request that may not be resent (a sid, a body): idle
  // longer than kFreshIdleMs, the backend may be closing them.
  std::atomic<uint64_t> pool_not_fresh{0};
  // New-session requests (handshakes, upgrades) retried on another backend after a failure
  // status or the handshake timeout.
  std::atomic<uint64_t> handshake_retries{0};
  // HTTP/2 to clients: connections, streams (each also a request), streams the client reset.
  std::atomic<uint64_t> http2_connections{0};
  std::atomic<uint64_t> http2_streams{0};
  std::atomic<uint64_t> http2_resets_by_client{0};
  std::atomic<uint64_t> http2_websockets{0};  // extended CONNECTs (RFC 8441)
  std::atomic<uint64_t> proxy_protocol_rejected[kProxyRejectReasons]{};
  void count_proxy_reject(ProxyReject why) {
    proxy_protocol_rejected[static_cast<size_t>(why)].fetch_add(1, std::memory_order_relaxed);
  }
  std::atomic<int64_t> active_connections{0};
  std::atomic<uint64_t> bytes_from_clients{0};  // added when a connection closes
  std::atomic<uint64_t> bytes_to_clients{0};
  Histogram request_latency;  // request head parsed → response complete
  Histogram connect_latency;  // upstream connect started → connected
  // Request handed to the backend's connection (a new one still connecting) → first response byte.
  Histogram upstream_first_byte;
  LifetimeHistogram tunnel_duration;  // 101 → both connections closed
  tls::Counters tls_clients;   // handshakes on TLS listeners
  tls::Counters tls_backends;  // handshakes with TLS upstreams
};

// One listener's share of the counters, for the `listener` label: shared by every worker (one
// cache line written per connection and per tunnel, never per request) and kept by name across
// reloads (runtime::SharedState).
struct ListenerCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<int64_t> active_connections{0};
  std::atomic<int64_t> tunnels{0};
};

// Every open client connection of a worker, for shutdown, drain and the tunnels' idle sweep. The
// links live in the connections (no allocation per connection).
class ConnectionList {
 public:
  void insert(ClientConnection* c);
  void erase(ClientConnection* c);
  size_t size() const { return size_; }
  // A copy, for walks whose calls may free connections.
  std::vector<ClientConnection*> snapshot() const;
  // In place: `f` may close a connection (it is unlinked only once freed, after its close
  // callback), never free one.
  template <class F>
  void for_each(F f) const;

 private:
  ClientConnection* head_ = nullptr;
  size_t size_ = 0;
};

struct WorkerContext {
  uv_loop_t* loop = nullptr;
  BufferPool buffers;
  UpstreamPool pool;
  std::mt19937_64 rng{std::random_device{}()};
  WorkerCounters counters;
  AccessLog access_log;  // its format follows server.access_log_format
  Graveyard graveyard;
  bool shutting_down = false;
  // Binary upgrade: the new process accepts now; every response from here on says
  // Connection: close, so keep-alive clients move over without a request lost to a close.
  bool close_after_response = false;
  uint64_t close_spread_ms = 0;  // window over which tunnel closes are spread (server.close_spread)
  // A tunnel's clean close waits this long: drawn from [0, close_spread), so closes spread out.
  uint64_t close_delay_ms() { return close_spread_ms > 0 ? rng() % close_spread_ms : 0; }
  ConnectionList connections;
  // The worker's connection to the shared session store ([session_store]); null without one.
  store::SessionStore* sessions = nullptr;
};

struct ListenerContext {
  std::shared_ptr<const void> owner;  // the snapshot: keeps config and upstream alive
  const config::ListenerConfig* config = nullptr;
  const balancer::Upstream* upstream = nullptr;
  const tls::ServerContext* tls = nullptr;           // a TLS listener's certificates and settings
  const tls::ClientContext* upstream_tls = nullptr;  // the upstream speaks TLS
  const balancer::CidrSet* trusted_proxies = nullptr;  // with proxy_protocol: who may send the header
  ListenerCounters* counters = nullptr;  // never null once a worker serves the listener
  // This worker's open connections on the listener (max_connections); shared with the worker's
  // listener so that a connection may outlive a listener removed by a reload.
  std::shared_ptr<uint32_t> open_connections;
};

}  // namespace limpet::proxy
