#include "limpet/proxy/client_connection.hpp"

#include <algorithm>
#include <optional>

#include "limpet/net/socket.hpp"
#include "limpet/proxy/http2_session.hpp"
#include "limpet/proxy/http_session.hpp"
#include "limpet/proxy/tunnel.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {

namespace {

bool from_trusted_proxy(const ListenerContext& listener, net::Stream* client) {
  sockaddr_storage peer{};
  int length = sizeof peer;
  if (listener.trusted_proxies == nullptr ||
      uv_tcp_getpeername(client->tcp(), reinterpret_cast<sockaddr*>(&peer), &length) != 0) {
    return false;
  }
  auto ip = balancer::ip_of(reinterpret_cast<const sockaddr*>(&peer));
  return ip && listener.trusted_proxies->contains(*ip);
}

bool socket_endpoints(uv_tcp_t* tcp, net::ProxyHeader* out) {
  int length = sizeof out->source.storage;
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&out->source.storage), &length) != 0) return false;
  out->source.length = static_cast<socklen_t>(length);
  length = sizeof out->destination.storage;
  if (uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&out->destination.storage), &length) != 0) return false;
  out->destination.length = static_cast<socklen_t>(length);
  return true;
}

}  // namespace

struct ClientConnection::Proxied {
  std::optional<net::ProxyHeaderReader> reader;  // while the header is awaited
  net::ProxyHeader endpoints;
  bool endpoints_known = false;
};

void ClientConnection::start(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                             net::Stream* client) {
  const bool proxy_protocol = listener->config->proxy_protocol;
  // Before anything is allocated for it: a flood from elsewhere costs an accept and a close.
  if (proxy_protocol && !from_trusted_proxy(*listener, client)) {
    worker->counters.count_proxy_reject(ProxyReject::kUntrusted);
    LOG_DEBUG("listener %s: connection from %s closed: not in trusted_proxies", listener->config->name.c_str(),
              net::peer_ip(client->tcp()).c_str());
    client->close();
    return;
  }
  auto* conn = new ClientConnection(worker, std::move(listener), client);
  worker->connections.insert(conn);
  client->set_delegate(conn);
  client->accepted();
  client->set_nodelay();
  if (proxy_protocol) {
    conn->proxied_ = std::make_unique<Proxied>();
    conn->proxied_->reader.emplace();
  } else {
    conn->http_ = std::make_unique<HttpSession>(*conn);
  }
  conn->refresh_deadline(Refresh::kRestart);
  client->start_reading();
}

const net::ProxyHeader& ClientConnection::endpoints() {
  if (!proxied_) proxied_ = std::make_unique<Proxied>();
  if (!proxied_->endpoints_known) {
    proxied_->endpoints_known = true;
    if (!socket_endpoints(client_->tcp(), &proxied_->endpoints)) proxied_->endpoints = {};
    proxied_->endpoints.has_addresses = proxied_->endpoints.source.length != 0;
  }
  return proxied_->endpoints;
}

bool ClientConnection::awaiting_proxy_header() const { return proxied_ && proxied_->reader; }

void ClientConnection::reject_proxy(ProxyReject why, const char* detail) {
  worker_->counters.count_proxy_reject(why);
  LOG_DEBUG("listener %s: connection from %s closed: %s", listener_->config->name.c_str(), client_ip_.c_str(), detail);
  close();
}

// Bytes before the HTTP session exists: the PROXY header, then whatever followed it in the same
// read, which is the start of the HTTP request or of the TLS handshake.
void ClientConnection::on_proxy_header_data(std::string_view data) {
  const net::ProxyParse r = proxied_->reader->feed(data);
  if (r.status == net::ProxyParse::Status::kNeedMore) return;  // its deadline runs from the accept
  if (r.status == net::ProxyParse::Status::kError) {
    reject_proxy(ProxyReject::kMalformed, r.error);
    return;
  }
  const net::ProxyHeader& header = proxied_->reader->header();
  if (header.has_addresses) {
    client_ip_ = net::ip_text(header.source.get());
    proxied_->endpoints = header;
    proxied_->endpoints_known = true;
  }
  // LOCAL / UNKNOWN: the socket's own endpoints, looked up if a backend ever needs them.
  proxied_->reader.reset();
  http_ = std::make_unique<HttpSession>(*this);
  refresh_deadline(Refresh::kRestart);
  const std::string_view rest = data.substr(r.consumed);
  if (listener_->tls != nullptr) {
    // The header came in the clear, ahead of the ClientHello: TLS starts with the next byte.
    client_->attach_filter(listener_->tls->new_filter(&worker_->counters.tls_clients, client_ip_), rest);
  } else if (!rest.empty()) {
    on_data(client_, rest);
  }
}

ClientConnection::ClientConnection(WorkerContext* worker,
                                   std::shared_ptr<const ListenerContext> listener,
                                   net::Stream* client)
    : worker_(worker),
      listener_(std::move(listener)),
      client_(client),
      client_ip_(net::peer_ip(client->tcp())) {
  ++*listener_->open_connections;
  worker_->counters.active_connections.fetch_add(1, std::memory_order_relaxed);
  listener_->counters->active_connections.fetch_add(1, std::memory_order_relaxed);
}

ClientConnection::~ClientConnection() {
  http_.reset();
  tunnel_.reset();
  worker_->counters.bytes_from_clients.fetch_add(client_->bytes_read(), std::memory_order_relaxed);
  worker_->counters.bytes_to_clients.fetch_add(client_->out().bytes_sent(), std::memory_order_relaxed);
  --*listener_->open_connections;
  worker_->counters.active_connections.fetch_sub(1, std::memory_order_relaxed);
  listener_->counters->active_connections.fetch_sub(1, std::memory_order_relaxed);
  worker_->connections.erase(this);
}

void ClientConnection::begin_shutdown() {
  if (awaiting_proxy_header()) {
    close();
  } else if (tunnel_) {
    tunnel_->close_cleanly(Tunnel::kCloseGoingAway, worker_->close_delay_ms());
  } else if (http_) {
    http_->begin_shutdown();
  }
}

void ClientConnection::drain_if_tunnel_to(const std::vector<uint32_t>& backend_ids) {
  if (http_) {
    http_->drain_tunnels_to(backend_ids);
    return;
  }
  if (!tunnel_ || std::find(backend_ids.begin(), backend_ids.end(), tunnel_->backend_id()) == backend_ids.end()) {
    return;
  }
  tunnel_->close_cleanly(Tunnel::kCloseServiceRestart, worker_->close_delay_ms());
}

void ClientConnection::close_tunnel_cleanly(uint16_t code, uint64_t delay_ms) {
  if (tunnel_) {
    tunnel_->close_cleanly(code, delay_ms);
  } else if (http_) {
    http_->close_tunnels_cleanly(code, delay_ms);
  }
}

void ClientConnection::become_tunnel(UpgradeHandoff handoff, std::string early_client_bytes) {
  std::string_view leftover = handoff.leftover;
  tunnel_ = std::make_unique<Tunnel>(*this, std::move(handoff));
  // The session is on the call stack (it called us): it goes at the end of the loop turn.
  worker_->graveyard.bury(std::move(http_));
  refresh_deadline(Refresh::kRestart);
  tunnel_->start(leftover, early_client_bytes);
}

void ClientConnection::sweep_idle(uint64_t now_ms) {
  if (tunnel_ && deadline_ == Deadline::kTunnelIdle && tunnel_->idle_expired(now_ms)) {
    tunnel_->on_deadline(Deadline::kTunnelIdle);
  }
}

void ClientConnection::close() {
  if (client_->closing()) return;
  if (tunnel_) tunnel_->drop_upstream();
  if (http_) http_->abort();
  client_->close();
}

// ---------------------------------------------------------------------------------------------
// The one timer

DeadlineSpec ClientConnection::current_deadline() const {
  if (awaiting_proxy_header()) return {Deadline::kProxyHeader, to_ms(listener_->config->proxy_protocol_timeout)};
  if (tunnel_) return tunnel_->deadline();
  if (http_) return http_->deadline();
  return {};
}

void ClientConnection::refresh_deadline(Refresh how) {
  if (client_->closing()) return;
  DeadlineSpec next = current_deadline();
  if (next.kind == Deadline::kTunnelIdle) {
    client_->drop_timer();  // the worker's sweep watches idle tunnels (sweep_idle)
  } else if (next.kind == Deadline::kNone) {
    client_->clear_timeout();
  } else if (how == Refresh::kRestart || next.kind != deadline_ ||
             (how == Refresh::kActivity && extends_on_activity(next.kind))) {
    client_->set_timeout(next.ms);  // lazy: moving a deadline later touches no timer
  }
  deadline_ = next.kind;
}

void ClientConnection::on_timeout(net::Stream*) {
  Deadline kind = std::exchange(deadline_, Deadline::kNone);
  LOG_DEBUG("client %s: %s deadline passed", client_ip_.c_str(), to_string(kind));
  if (kind == Deadline::kProxyHeader) {
    reject_proxy(ProxyReject::kTimeout, "no complete PROXY header within proxy_protocol_timeout");
  } else if (tunnel_) {
    tunnel_->on_deadline(kind);
  } else if (http_) {
    http_->on_deadline(kind);
  }
  refresh_deadline(Refresh::kRestart);
}

// ---------------------------------------------------------------------------------------------
// Client stream events (the upstream stream's go to the exchange or the tunnel directly)

void ClientConnection::on_data(net::Stream*, std::string_view data) {
  if (awaiting_proxy_header()) {
    on_proxy_header_data(data);
    return;
  }
  if (tunnel_) {
    tunnel_->on_client_data(data);
  } else {
    if (!protocol_chosen_ && !choose_protocol(data)) return;
    http_->on_client_data(data);
  }
  refresh_deadline(Refresh::kActivity);
}

bool ClientConnection::choose_protocol(std::string_view data) {
  protocol_chosen_ = true;
  if (!listener_->config->http2) return true;
  if (client_->filtered()) {
    if (client_->application_protocol() == "h2") http_ = std::make_unique<Http2Session>(*this);
    return true;
  }
  // RFC 9113 §3.4: prior knowledge; an HTTP/1 request never starts with "PRI ".
  constexpr std::string_view kStart = "PRI ";
  const size_t seen = preface_seen_;
  const size_t n = std::min(kStart.size() - seen, data.size());
  const bool matches = data.substr(0, n) == kStart.substr(seen, n);
  if (matches && seen + n < kStart.size()) {
    preface_seen_ = static_cast<uint8_t>(seen + n);
    protocol_chosen_ = false;
    return false;
  }
  if (matches) http_ = std::make_unique<Http2Session>(*this);
  if (seen > 0) http_->on_client_data(kStart.substr(0, seen));
  return !client_->closing();
}

void ClientConnection::on_end(net::Stream*, int status) {
  if (awaiting_proxy_header()) {
    // A TCP check that connects and leaves (HAProxy's `check` without send-proxy) is no error.
    if (client_->bytes_read() > 0) reject_proxy(ProxyReject::kMalformed, "closed inside the PROXY header");
    close();
    return;
  }
  if (tunnel_) {
    tunnel_->on_client_end(status);
  } else {
    http_->on_client_end(status);
  }
  refresh_deadline(Refresh::kIfChanged);
}

void ClientConnection::on_writable(net::Stream*) {
  if (tunnel_) {
    tunnel_->on_client_writable();
  } else if (http_) {
    http_->on_client_writable();
  }
  refresh_deadline(Refresh::kActivity);
}

void ClientConnection::on_closed(net::Stream*) { delete this; }

// ---------------------------------------------------------------------------------------------

void ConnectionList::insert(ClientConnection* c) {
  c->list_prev_ = nullptr;
  c->list_next_ = head_;
  if (head_ != nullptr) head_->list_prev_ = c;
  head_ = c;
  ++size_;
}

void ConnectionList::erase(ClientConnection* c) {
  if (c->list_prev_ != nullptr) {
    c->list_prev_->list_next_ = c->list_next_;
  } else {
    head_ = c->list_next_;
  }
  if (c->list_next_ != nullptr) c->list_next_->list_prev_ = c->list_prev_;
  c->list_prev_ = c->list_next_ = nullptr;
  --size_;
}

std::vector<ClientConnection*> ConnectionList::snapshot() const {
  std::vector<ClientConnection*> all;
  all.reserve(size_);
  for (ClientConnection* c = head_; c != nullptr; c = c->list_next_) all.push_back(c);
  return all;
}

}  // namespace limpet::proxy
