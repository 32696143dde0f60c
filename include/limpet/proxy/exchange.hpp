// One proxied request across its attempts: route and retry policy, a lease on the chosen backend,
// a pooled or new upstream connection, the request head and body toward it, the response parser,
// 1xx, the sticky cookie, Engine.IO sid learning, and the handoff of a 101 to a tunnel. It knows
// nothing of how its client speaks: it reports to an ExchangeOwner (an HTTP/1 session today, an
// HTTP/2 stream later), which frames the response for its client. Owning worker only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/upstream.hpp"
#include "limpet/http/parser.hpp"
#include "limpet/net/fd_budget.hpp"
#include "limpet/net/proxy_protocol.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/backend_lease.hpp"
#include "limpet/proxy/context.hpp"
#include "limpet/proxy/deadline.hpp"
#include "limpet/proxy/handshake_learner.hpp"
#include "limpet/proxy/relay.hpp"

namespace limpet::proxy {

// What a 101 hands over to the tunnel that follows it.
struct UpgradeHandoff {
  net::Stream* upstream = nullptr;  // the tunnel's from now on (delegate still to be set)
  std::string_view leftover;        // bytes that came after the 101 head
  BackendLease lease;
  std::string_view session_id;      // Engine.IO sid of the upgraded session, if any
  bool session_known = false;       // routed by its affinity entry: the session is counted there
};

class ExchangeOwner {
 public:
  virtual ~ExchangeOwner() = default;
  // A 1xx other than 101; the final response follows.
  virtual void on_interim_response(const http::ResponseHead& head) = 0;
  // The final head (a 101 only for a WebSocket request). `set_cookie`: a sticky-cookie value to
  // add, or empty.
  virtual void on_response_head(const http::ResponseHead& head, std::string_view set_cookie) = 0;
  virtual void on_response_body(std::string_view data) = 0;
  // The bytes of this upstream read are all delivered: anything held for a gathered write goes.
  virtual void flush_response() = 0;
  // Complete. The exchange is over (connection pooled or closed, lease given back): the owner
  // may start it again from here.
  virtual void on_response_end() = 0;
  // Failed (the exchange is over, as above). No response head yet: answer `status`; after the
  // head: the response is cut short and only closing can tell the client.
  virtual void on_exchange_failed(int status) = 0;
  // After the 101 head: the upstream connection now belongs to a tunnel.
  virtual void on_upgraded(UpgradeHandoff handoff) = 0;
  // Where response bytes wait for the client: the backend is not read while it is full.
  virtual net::ByteStream* response_sink() = 0;
  // Something changed that may change the connection's deadline.
  virtual void on_exchange_progress(bool activity) = 0;
};

// Everything a request brings to its exchange; all of it outlives the exchange.
struct ExchangeRequest {
  const http::RequestHead* head = nullptr;
  std::string_view client_ip;
  // Decides about reading the client: the exchange points it at the upstream connection while
  // the request body flows.
  Relay* body_relay = nullptr;
  // For upstream.send_proxy_protocol: the client's endpoints the header carries.
  const net::ProxyHeader* endpoints = nullptr;
  // The client's fd held back for its backend connection: released once it has one.
  net::FdReservation* backend_fd = nullptr;
};

class Exchange : public net::StreamDelegate {
 public:
  enum class Phase : uint8_t {
    kIdle,          // not started, or over
    kConnecting,    // a new upstream connection is being opened (the head waits in its queue)
    kSending,       // connected, the request body still flows, no response head yet
    kAwaitingHead,  // the request is sent, no response head yet
    kReceiving,     // the response head arrived (the request body may still flow: full duplex)
    kLookingUp,     // the request's sid is unknown here: the session store is asked before routing
    kHolding,       // a handshake response is complete, held until the store has its sid
  };

  Exchange(WorkerContext* worker, const ListenerContext* listener, ExchangeOwner* owner);
  ~Exchange() override;
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  // Routes and sends `request`; reports 503 through on_exchange_failed when nothing is usable.
  void start(const ExchangeRequest& request);
  // Request body bytes, decoded (the exchange frames them for the backend), and its end.
  void send_body(std::string_view data);
  void end_body();
  // The owner gives up (client gone, client stalled, shutdown): the upstream connection is
  // closed, never pooled; no callback follows.
  void abort();

  // The client side drained: the backend may be read again.
  void on_client_writable() { response_relay_.update(); }

  Phase phase() const { return phase_; }
  bool active() const { return phase_ != Phase::kIdle; }
  bool request_complete() const { return request_complete_; }
  // What the connection's timer stands for now; only meaningful while active.
  DeadlineSpec deadline() const;
  // A deadline of the backend's kind expired (see blames_backend()).
  void on_deadline(Deadline kind);

  // For the access log, valid after the exchange ended too (until the next start).
  const char* backend_name() const;
  const char* route_reason() const;
  uint64_t upstream_time_ns(uint64_t now_ns) const;

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream* s) override;
  void on_closed(net::Stream*) override {}
  void on_timeout(net::Stream*) override {}

 private:
  struct ResponseSide : http::ParserDelegate {
    Exchange* self = nullptr;
    bool on_head() override { return self->on_response_head(); }
    bool on_body(std::string_view d) override { return self->on_response_body(d); }
    void on_message_end() override { self->on_response_end(); }
  };

  // The request is routed (route_): refresh the store's TTL if due, then the first attempt.
  void dispatch();
  bool ask_store();
  void on_store_lookup(store::LookupResult result, std::string_view backend);
  // Learn before release: the held handshake response goes once the store has its sid.
  void publish_learned_sid();
  void release_response();
  void cancel_store_wait();
  void attempt(int backend, std::vector<std::string> payload);
  void send_payload(const std::vector<std::string>& payload);
  void on_connected(int status);
  bool may_retry() const;
  bool may_resend_on_fresh_connection() const;
  bool opens_session() const;
  bool may_retry_new_session() const;
  // `status` answered to a new session counts as its backend's failure (health.failure_statuses).
  bool fails_new_session(int status) const;
  // Routes again without the backends tried and sends there (counted in `counter`), or fails
  // with `status_if_not`.
  void retry_elsewhere(int status_if_not, std::atomic<uint64_t>& counter);
  bool on_response_head();
  bool on_response_body(std::string_view data);
  void on_response_end();
  void parse_response(std::string_view data);
  void upgrade(std::string_view leftover);
  // Ends the exchange: the upstream connection is pooled (`reusable`) or closed, the lease given
  // back. Then the owner hears `on_response_end` or `on_exchange_failed(status)`.
  void complete(bool reusable);
  void fail(int status, const char* why);
  void end();
  void drop_upstream();
  const balancer::Upstream& upstream() const { return *listener_->upstream; }
  // A connection that starts with a PROXY header speaks for one client: never pooled.
  bool private_connections() const {
    return upstream().config().send_proxy_protocol != config::SendProxyProtocol::kOff;
  }
  std::string proxy_header() const;

  WorkerContext* worker_;
  const ListenerContext* listener_;
  ExchangeOwner* owner_;
  ExchangeRequest request_;
  Relay response_relay_;  // upstream → client
  net::Stream* upstream_ = nullptr;
  BackendLease lease_;
  balancer::Route route_;
  const balancer::RuntimeBackend* chosen_ = nullptr;  // for the access log, kept after the lease
  std::vector<int> tried_;
  std::string pool_key_;      // built in place: keeps its buffer from one request to the next
  std::string request_head_;  // the rewritten head, kept for a resend on a fresh connection
  HandshakeLearner learner_;
  ResponseSide response_side_;
  std::unique_ptr<http::Parser> response_parser_;
  // Session store: the lookup or publish being waited for (0: none), the request's body while a
  // lookup runs, and a held handshake response (its head stays in response_parser_).
  uint64_t store_ticket_ = 0;
  std::vector<std::string> held_request_;
  std::string held_body_;
  std::string held_cookie_;
  uint64_t sent_ns_ = 0;  // uv_hrtime() when the request was handed to the backend's connection
  uint64_t connect_started_ns_ = 0;
  Phase phase_ = Phase::kIdle;
  bool request_complete_ = false;
  bool first_byte_seen_ = false;  // of this attempt's response (upstream_first_byte)
  bool reused_ = false;          // the connection came from the pool
  bool resent_ = false;          // the one resend after a stale pooled connection was used
  bool response_started_ = false;  // the final head went to the owner
  bool interim_ = false;         // the head being parsed is a 1xx
  int discarding_ = 0;  // a new session's failure status, dropped for another backend; 0: none
  bool upstream_ended_ = false;
  bool holding_ = false;       // the response goes to the owner only once the store has the sid
  bool published_ = false;     // the learned sid was handed to the store (or could not be)
};

}  // namespace limpet::proxy
