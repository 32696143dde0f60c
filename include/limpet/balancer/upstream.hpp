// The runtime form of one [[upstream]]: its backends, ring and routing policy. Built on the main
// thread as part of a Snapshot and immutable afterwards; route() and the session hooks are called
// concurrently from every worker (shared state lives in BackendState atomics and AffinityTable).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/backend.hpp"
#include "limpet/balancer/sticky_key.hpp"
#include "limpet/config/config.hpp"
#include "limpet/http/message.hpp"
#include "limpet/util/clock.hpp"
#include "limpet/util/result.hpp"

namespace limpet::balancer {

class AffinityTable;
class Placement;
class Ring;

// Why a backend was chosen; written to the access log ("why did this client land there").
enum class RouteReason { kNone, kAffinity, kCookie, kHash, kPlacement };
const char* to_string(RouteReason reason);

struct RuntimeBackend {
  const config::BackendConfig* config = nullptr;  // points into the snapshot's Config
  std::shared_ptr<BackendState> state;
  sockaddr_storage addr{};  // resolved at build time
  socklen_t addr_len = 0;
  std::string cookie_token;  // stable opaque token for the sticky cookie (derived from the name)
  // Left the configuration in a reload and still draining: reachable only by its known sessions
  // (affinity, cookie), never hashed to or placed on, not health-checked.
  bool retired = false;
};

struct RouteInput {
  const http::RequestHead& head;
  std::string_view client_ip;  // peer address as text ("127.0.0.1", "::1")
  std::span<const int> exclude;  // backend indexes already tried for this request (connect failures)
  uint64_t random = 0;  // caller-supplied randomness (per-worker PRNG), for two_choices
};

struct Route {
  int backend = -1;  // index into backends(); -1 = nothing usable (caller answers 503)
  RouteReason reason = RouteReason::kNone;
  std::string session_id;  // Engine.IO sid carried by the request ("" if none): never retry once sent
  bool engineio = false;   // request path is one of engineio_paths
  bool handshake = false;  // engineio, an EIO parameter and no sid: the response may carry a new sid to learn
  bool set_cookie = false; // sticky cookie enabled and the request did not carry a valid one
  // Placed, and it opens a session (an Engine.IO handshake or a WebSocket upgrade): the proxy
  // counts it in the backend's `placing` from now until the session is learned, established or
  // failed (proxy::BackendLease), so a burst spreads instead of herding.
  bool new_session = false;
  // A sid the affinity table does not know (not an expired or down one): another instance may
  // have learned it, so the proxy asks the session store before it uses this route.
  bool sid_unknown = false;
  // Known, and the session store last heard of it at least session_ttl/2 ago: refresh its TTL.
  bool refresh_store = false;
};

class Upstream {
 public:
  // Resolves addresses, builds the ring, binds BackendStates by name. `clock` stamps passive
  // health transitions and drives slow start: the process's one clock, which must outlive the
  // upstream. `retired`: backends a reload removed whose drain has not ended; they follow the
  // configured ones in backends(). Main thread.
  static Result<std::shared_ptr<const Upstream>> build(const config::UpstreamConfig& cfg,
                                                       BackendRegistry& registry,
                                                       std::shared_ptr<AffinityTable> affinity,
                                                       const Clock& clock,
                                                       std::vector<config::BackendConfig> retired = {});
  ~Upstream();

  const config::UpstreamConfig& config() const { return *config_; }
  const std::vector<RuntimeBackend>& backends() const { return backends_; }

  // Order (design §5): affinity (sid) → sticky cookie → consistent hash → placement.
  // Into `out`, replaced whole: its session_id keeps its buffer from one request to the next, so
  // a proxy that keeps one Route per connection routes without allocating.
  void route(const RouteInput& in, Route& out) const;
  Route route(const RouteInput& in) const {
    Route r;
    route(in, r);
    return r;
  }

  // Session hooks, called by the proxy on the worker that handled the request. The proxy parses
  // the handshake (http/engineio) and reports the sid the backend at index `backend` issued.
  void learn_session(std::string_view session_id, int backend) const;
  // A session another instance learned, read from the session store: `backend_name` names the
  // backend. False (nothing learned) when this upstream has no backend of that name.
  bool adopt_session(std::string_view session_id, std::string_view backend_name) const;
  // A handshake response whose sid could not be read (compressed, garbage): counted only.
  void note_unparsable_handshake() const;
  // The session's WebSocket tunnel ended: the session is over.
  void forget_session(std::string_view session_id) const;

  // Passive health: the proxy could not connect to backend i, or it did not answer in time.
  // Counted; enough of them within the window mark the backend down (logged here).
  void report_failure(int backend, const char* what) const;
  // A new session failed on backend i (a failure status, no answer in time): a passive failure,
  // and placement avoids the backend for fail_timeout or until a new session succeeds there.
  void report_new_session_failure(int backend, const char* what) const;

  // "Set-Cookie: <name>=<token>; Path=...; ..." value for backend i (no header name, no CRLF).
  std::string sticky_cookie_value(int backend) const;

  // Helpers for the admin API, logs and tests.
  int index_of_state(uint32_t state_id) const;          // backend index with this BackendState id, or -1
  int index_of_token(std::string_view token) const;     // backend index with this cookie token, or -1
  const Ring& ring() const { return *ring_; }
  const std::shared_ptr<AffinityTable>& affinity() const { return affinity_; }

 private:
  Upstream() = default;
  bool accepts_new(int i, std::span<const int> exclude) const;

  const config::UpstreamConfig* config_ = nullptr;
  const Clock* clock_ = nullptr;  // set by build(), never null afterwards
  std::vector<RuntimeBackend> backends_;
  std::vector<std::unique_ptr<const config::BackendConfig>> retired_configs_;  // RuntimeBackend::config of retired ones
  std::unique_ptr<Ring> ring_;
  std::unique_ptr<Placement> placement_;
  std::shared_ptr<AffinityTable> affinity_;  // may be null: no sid affinity
  CidrSet trusted_proxies_;
  std::vector<std::pair<uint32_t, int>> by_state_id_;  // sorted (BackendState::id, index)
};

}  // namespace limpet::balancer
