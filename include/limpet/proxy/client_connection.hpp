// One accepted client connection and everything it drives: request heads parsed one at a time
// (pipelined requests wait their turn), the exchange with a backend (route, connect with retry,
// stream the body both ways, learn Engine.IO sessions), and after a 101 the WebSocket tunnel.
// Self-deleting once its client and upstream streams are closed. Owning worker only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "limpet/balancer/upstream.hpp"
#include "limpet/http/parser.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/context.hpp"

namespace limpet::proxy {

class ClientConnection : public net::StreamDelegate {
 public:
  // Takes ownership of the accepted `client` stream.
  static void start(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                    net::Stream* client);

  // Graceful shutdown: idle connections close now, busy ones after their current response,
  // tunnels with a WebSocket Close (1001) after a delay drawn from [0, close_spread).
  void begin_shutdown();
  // Close a tunnel cleanly: after `delay_ms`, a Close frame with `code` goes to each side at its
  // next frame boundary (masked toward the backend); the TCP connections close when both sides
  // have answered with their Close, or a few seconds later.
  void close_tunnel_cleanly(uint16_t code, uint64_t delay_ms);
  // Reload removed (or an operator drained) one of these backends: a tunnel to it closes cleanly
  // with 1012 "service restart", spread over close_spread.
  void drain_if_tunnel_to(const std::vector<uint32_t>& backend_ids);

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream* s) override;
  void on_closed(net::Stream* s) override;
  void on_timeout(net::Stream* s) override;

 private:
  enum class State { kReadingHead, kExchange, kTunnel, kClosing };

  // The two parsers report to these small adapters so each side has its own callbacks.
  struct RequestSide : http::ParserDelegate {
    ClientConnection* self;
    bool on_head() override { return self->on_request_head(); }
    bool on_body(std::string_view d) override { return self->on_request_body(d); }
    void on_message_end() override { self->on_request_end(); }
  };
  struct ResponseSide : http::ParserDelegate {
    ClientConnection* self;
    bool on_head() override { return self->on_response_head(); }
    bool on_body(std::string_view d) override { return self->on_response_body(d); }
    void on_message_end() override { self->on_response_end(); }
  };

  ClientConnection(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                   net::Stream* client);
  ~ClientConnection();

  // Client side.
  void on_client_data(std::string_view data);
  void parse_pending_input();
  void on_request_paused(http::Parser::State state);
  void on_request_error();
  bool on_request_head();
  bool on_request_body(std::string_view data);
  void on_request_end();
  void next_request();
  void update_client_reading();

  // Upstream side. `payload` is what an earlier attempt queued but never sent (retry).
  void start_exchange();
  void connect_upstream(int backend, std::vector<std::string> payload);
  void on_connected(int status);
  bool may_retry() const;
  void retry_elsewhere(int status_if_not);
  void on_upstream_data(std::string_view data);
  void on_upstream_end(int status);
  void upstream_failed(int status_to_client, const char* why);
  bool on_response_head();
  void flush_response_head(std::string_view tail = {});
  std::string_view pending_response_head() const {
    return response_head_pending_ ? std::string_view(response_head_out_) : std::string_view();
  }
  bool on_response_body(std::string_view data);
  void on_response_end();
  void learn_session_from_body(bool final);
  void complete_exchange(bool upstream_clean);
  void drop_upstream();
  void write_payload(const std::vector<std::string>& payload);

  // Tunnel.
  struct TunnelState;
  void start_tunnel(std::string_view upstream_leftover);
  void release_http_state();
  void tunnel_data(net::Stream* from, std::string_view data);
  void tunnel_end(net::Stream* from, int status);
  void tunnel_timer();
  void set_tunnel_close_deadline(uint64_t delay_ms);
  void arm_tunnel_timer();
  void inject_close(bool toward_backend);
  void finish_clean_close_if_answered();
  void close_after_tunnel_writes();
  void end_tunnel_accounting();

  // Ending.
  void respond_error(int status);
  void close_after_flush();
  void close_all();
  void log_access(int status);
  // Body bytes in the message's framing, after `head` if that has not been written yet.
  static void write_body(net::Stream* to, http::BodyFraming framing, std::string_view data,
                         std::string_view head = {});
  const balancer::Upstream& upstream() const { return *listener_->upstream; }
  const config::ListenerConfig& lconf() const { return *listener_->config; }

  // Word-sized members first and the flags packed at the end: there is one of these per
  // connection and per tunnel (issue 6 counts the bytes).
  WorkerContext* worker_;
  std::shared_ptr<const ListenerContext> listener_;
  net::Stream* client_;
  net::Stream* upstream_ = nullptr;
  std::string client_ip_;

  RequestSide request_side_;
  ResponseSide response_side_;
  // Both parsers live as long as the connection speaks HTTP (reused for every request) and are
  // freed when it becomes a tunnel.
  std::unique_ptr<http::Parser> request_parser_;
  std::unique_ptr<http::Parser> response_parser_;
  std::string pending_in_;  // client bytes not yet parsed (after a pause or an upgrade head)

  // The current exchange.
  const http::RequestHead* request_ = nullptr;  // request_parser_'s head, during an exchange
  balancer::Route route_;
  std::vector<int> tried_;
  std::string upstream_key_;
  std::string request_head_out_;  // kept for a retry on a stale pooled connection
  // The response head for the client waits here until the first body bytes (or the end of the
  // bytes at hand) so that both leave in one write.
  std::string response_head_out_;
  std::string handshake_body_;  // first bytes of an Engine.IO handshake response
  uint64_t request_started_ns_ = 0;  // uv_hrtime() at the request head, for the latency histogram
  uint64_t connect_started_ns_ = 0;
  uint64_t response_bytes_before_ = 0;  // client bytes_sent() when the request began
  uint64_t request_body_bytes_ = 0;
  std::unique_ptr<TunnelState> tunnel_;
  int backend_ = -1;
  State state_ = State::kReadingHead;
  http::BodyFraming response_framing_ = http::BodyFraming::kNone;
  bool request_paused_ = false;
  bool response_head_pending_ = false;
  bool upstream_reused_ = false;
  bool upstream_connected_ = false;
  bool request_done_ = false;
  bool response_started_ = false;  // any response byte written to the client
  bool response_head_seen_ = false;
  bool interim_response_ = false;  // a 1xx before the real response
  bool close_after_response_ = false;
  bool handshake_learning_ = false;
  bool handshake_encoded_ = false;
  bool client_ended_ = false;
  bool upstream_ended_ = false;
};

}  // namespace limpet::proxy
