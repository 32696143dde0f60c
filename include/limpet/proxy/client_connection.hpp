// One accepted client connection: owns the client stream, its one timer and what the timer
// currently stands for (a typed deadline), and either an HTTP session or, after a 101, a tunnel.
// On a proxy_protocol listener it first reads the PROXY header itself (before any TLS filter),
// and only then starts the HTTP session.
// It routes the client stream's events to whichever it holds and is the entry point for shutdown
// and drain. Self-deleting when the client stream has closed. Owning worker only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/net/proxy_protocol.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/context.hpp"
#include "limpet/proxy/deadline.hpp"
#include "limpet/proxy/exchange.hpp"
#include "limpet/proxy/tunnel.hpp"

namespace limpet::proxy {

class ClientSession;
class Tunnel;

class ClientConnection final : public net::StreamDelegate, public TunnelOwner {
 public:
  // Takes ownership of the accepted `client` stream.
  static void start(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                    net::Stream* client);

  // Graceful shutdown: idle connections close now, busy ones after their current response,
  // tunnels with a WebSocket Close (1001) after a delay drawn from [0, close_spread).
  void begin_shutdown();
  // Reload removed (or an operator drained) one of these backends: a tunnel to it closes cleanly
  // with 1012 "service restart", spread over close_spread.
  void drain_if_tunnel_to(const std::vector<uint32_t>& backend_ids);
  // Tests and the admin API: close a tunnel cleanly after `delay_ms`.
  void close_tunnel_cleanly(uint16_t code, uint64_t delay_ms);
  // An idle tunnel holds no timer: its worker calls this about once a second for every
  // connection, and a tunnel idle for tunnel_idle_timeout is closed.
  void sweep_idle(uint64_t now_ms);

  // For the session and the tunnel it holds.
  WorkerContext* worker() const override { return worker_; }
  const ListenerContext& listener() const override { return *listener_; }
  const std::shared_ptr<const ListenerContext>& listener_ref() const { return listener_; }
  net::Stream* client() const { return client_; }
  // The client's address: the PROXY header's source when there was one, else the peer's.
  std::string_view client_ip() const override { return client_ip_; }  // NUL-terminated
  // The client's address and port and the address it connected to, for a PROXY header toward a
  // backend: those of the PROXY header received, else the socket's (looked up on first use).
  // has_addresses is false when neither is known (a LOCAL header then).
  const net::ProxyHeader& endpoints();
  // The fd budget's hold for this client's backend connection (net/fd_budget.hpp).
  net::FdReservation& backend_fd() { return backend_fd_; }
  enum class Refresh : uint8_t {
    kIfChanged,  // re-arm only if the kind of deadline changed
    kActivity,   // also move an inactivity deadline on
    kRestart,    // a new phase began: re-arm whatever it is
  };
  void refresh_deadline(Refresh how);
  // The HTTP session hands over to a tunnel; the session is freed at the end of the loop turn.
  void become_tunnel(UpgradeHandoff handoff, std::string early_client_bytes);
  // Closes the client connection and lets go of any backend connection now.
  void close() override;
  // TunnelOwner: the whole connection is the tunnel's client side.
  net::ByteStream* tunnel_client() override { return client_; }
  void tunnel_deadline_changed() override { refresh_deadline(Refresh::kRestart); }

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream* s) override;
  void on_closed(net::Stream* s) override;
  void on_timeout(net::Stream* s) override;

 private:
  friend class ConnectionList;
  ClientConnection(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                   net::Stream* client);
  ~ClientConnection() override;
  DeadlineSpec current_deadline() const;
  bool awaiting_proxy_header() const;
  void on_proxy_header_data(std::string_view data);
  void reject_proxy(ProxyReject why, const char* detail);
  // On an http2 listener the first plaintext bytes choose the session: TLS by its ALPN, cleartext
  // by the HTTP/2 preface. False while `data` is still the start of "PRI " (it is remembered as a
  // count: the bytes are known).
  bool choose_protocol(std::string_view data);

  WorkerContext* worker_;
  std::shared_ptr<const ListenerContext> listener_;
  net::Stream* client_;
  net::FdReservation backend_fd_;
  std::string client_ip_;
  // Only on proxy_protocol listeners, or once a backend wants a PROXY header: a plain
  // connection carries the pointer alone.
  struct Proxied;
  std::unique_ptr<Proxied> proxied_;
  std::unique_ptr<ClientSession> http_;  // until a 101 (and, behind a PROXY header, from its end)
  std::unique_ptr<Tunnel> tunnel_;     // after it
  ClientConnection* list_prev_ = nullptr;  // WorkerContext::connections
  ClientConnection* list_next_ = nullptr;
  Deadline deadline_ = Deadline::kNone;
  bool protocol_chosen_ = false;
  uint8_t preface_seen_ = 0;  // bytes of "PRI " read so far (cleartext http2 listeners)
};

template <class F>
void ConnectionList::for_each(F f) const {
  for (ClientConnection* c = head_; c != nullptr; c = c->list_next_) f(c);
}

}  // namespace limpet::proxy
