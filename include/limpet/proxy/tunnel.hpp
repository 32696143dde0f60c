// The WebSocket tunnel after a 101: two relays (client → backend, backend → client) that follow
// frame boundaries without touching payloads or masks, so that it can count messages, enforce
// max_message_size (Close 1009 to the sender), propagate half-closes, and close cleanly — a Close
// frame injected at a frame boundary toward each side (1001 on shutdown, 1012 on drain, masked
// toward the backend), then the TCP connections once both answered or a deadline passed. It
// holds the backend lease and the session id from the exchange, and nothing of HTTP.
// Owning worker only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "limpet/http/websocket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/backend_lease.hpp"
#include "limpet/proxy/deadline.hpp"
#include "limpet/proxy/exchange.hpp"
#include "limpet/proxy/relay.hpp"

namespace limpet::proxy {

// What a tunnel's client side belongs to: a ClientConnection (an HTTP/1.1 upgrade: the whole
// connection) or an Http2Stream (RFC 8441: one stream of an HTTP/2 connection). Everything here
// outlives the tunnel.
class TunnelOwner {
 public:
  virtual WorkerContext* worker() const = 0;
  virtual const ListenerContext& listener() const = 0;
  virtual std::string_view client_ip() const = 0;  // NUL-terminated
  virtual net::ByteStream* tunnel_client() = 0;
  // The tunnel's deadline changed (tunnel.deadline() says to what).
  virtual void tunnel_deadline_changed() = 0;
  // The tunnel is over: close the client side (and let go of the backend now).
  virtual void close() = 0;

 protected:
  ~TunnelOwner() = default;
};

class Tunnel : public net::StreamDelegate {
 public:
  static constexpr uint16_t kCloseGoingAway = 1001;
  static constexpr uint16_t kCloseProtocolError = 1002;
  static constexpr uint16_t kCloseTooBig = 1009;
  static constexpr uint16_t kCloseServiceRestart = 1012;

  Tunnel(TunnelOwner& conn, UpgradeHandoff handoff);
  ~Tunnel() override;
  Tunnel(const Tunnel&) = delete;
  Tunnel& operator=(const Tunnel&) = delete;

  // Bytes that came with either head belong to the tunnel and go first.
  void start(std::string_view upstream_leftover, std::string_view early_client_bytes);

  void on_client_data(std::string_view data) { forward(up_, data); }
  void on_client_end(int status) { on_source_end(up_, status); }
  void on_client_writable() { on_sink_writable(down_); }
  DeadlineSpec deadline() const;
  void on_deadline(Deadline kind);

  // After `delay_ms`, a Close frame with `code` goes to each side at its next frame boundary;
  // the connections close when both have answered, or kCloseReplyMs later.
  void close_cleanly(uint16_t code, uint64_t delay_ms);
  // The connection is closing: let go of the backend now.
  void drop_upstream();
  uint32_t backend_id() const { return lease_.state().id; }
  bool idle_expired(uint64_t now_ms) const;

  // The upstream connection's events.
  void on_data(net::Stream*, std::string_view data) override { forward(down_, data); }
  void on_end(net::Stream*, int status) override { on_source_end(down_, status); }
  void on_writable(net::Stream*) override { on_sink_writable(up_); }
  void on_closed(net::Stream*) override {}
  void on_timeout(net::Stream*) override {}

 private:
  struct Direction {
    Relay relay;
    http::websocket::FrameTracker frames;
    uint64_t bytes = 0;        // read from this direction's source
    uint32_t answer_mark = 0;  // the other direction's closes() when we sent our Close this way
    bool close_sent = false;
    bool ended = false;
  };

  Direction& other(Direction& d) { return &d == &up_ ? down_ : up_; }
  bool toward_backend(const Direction& d) const { return &d == &up_; }
  void forward(Direction& d, std::string_view data);
  // A frame limpet will not forward (a framing error, or over max_message_size): see tunnel.cpp.
  void refuse_frame(Direction& d, std::string_view up_to_boundary, uint16_t code);
  void inject_close(Direction& d);
  void finish_if_answered();
  void on_source_end(Direction& d, int status);
  void on_sink_writable(Direction& d);
  void finish();
  void start_close_replies();
  // The first side to end the tunnel, and why; later events do not change it.
  void note_end(TunnelCloser by, TunnelCloseReason why);
  void log_close();
  uint64_t idle_ms() const;

  TunnelOwner& conn_;
  net::Stream* upstream_;
  BackendLease lease_;
  // The Engine.IO sid, on the heap only for tunnels that have one: a plain WebSocket tunnel
  // carries the pointer alone.
  std::unique_ptr<const std::string> session_id_;
  // The session also has an affinity entry (it was routed by it): BackendState counts it once.
  bool counted_in_affinity_ = false;
  Direction up_;    // client → backend
  Direction down_;  // backend → client
  uint64_t opened_ms_ = 0;         // loop time of the 101
  uint64_t last_activity_ms_ = 0;  // loop time of the last bytes either way
  uint64_t close_deadline_ = 0;  // loop time (ms) of the next clean-close step; 0: none
  uint16_t close_code_ = 0;      // a clean close was asked for
  TunnelCloser closed_by_ = TunnelCloser::kNone;
  TunnelCloseReason close_reason_ = TunnelCloseReason::kClosed;
  bool close_started_ = false;   // its delay has passed: Close frames go out at boundaries
  bool finished_ = false;        // both directions done: close once the queues are written
};

}  // namespace limpet::proxy
