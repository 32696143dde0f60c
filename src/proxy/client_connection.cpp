#include "limpet/proxy/client_connection.hpp"

#include <algorithm>

#include "limpet/net/socket.hpp"
#include "limpet/proxy/http_session.hpp"
#include "limpet/proxy/tunnel.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {

void ClientConnection::start(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                             net::Stream* client) {
  auto* conn = new ClientConnection(worker, std::move(listener), client);
  worker->connections.insert(conn);
  client->set_delegate(conn);
  client->accepted();
  client->set_nodelay();
  conn->http_ = std::make_unique<HttpSession>(*conn);
  conn->refresh_deadline(Refresh::kRestart);
  client->start_reading();
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
}

ClientConnection::~ClientConnection() {
  http_.reset();
  tunnel_.reset();
  worker_->counters.bytes_from_clients.fetch_add(client_->bytes_read(), std::memory_order_relaxed);
  worker_->counters.bytes_to_clients.fetch_add(client_->out().bytes_sent(), std::memory_order_relaxed);
  --*listener_->open_connections;
  worker_->counters.active_connections.fetch_sub(1, std::memory_order_relaxed);
  worker_->connections.erase(this);
}

void ClientConnection::begin_shutdown() {
  if (tunnel_) {
    tunnel_->close_cleanly(Tunnel::kCloseGoingAway, worker_->close_delay_ms());
  } else if (http_) {
    http_->begin_shutdown();
  }
}

void ClientConnection::drain_if_tunnel_to(const std::vector<uint32_t>& backend_ids) {
  if (!tunnel_ || std::find(backend_ids.begin(), backend_ids.end(), tunnel_->backend_id()) == backend_ids.end()) {
    return;
  }
  tunnel_->close_cleanly(Tunnel::kCloseServiceRestart, worker_->close_delay_ms());
}

void ClientConnection::close_tunnel_cleanly(uint16_t code, uint64_t delay_ms) {
  if (tunnel_) tunnel_->close_cleanly(code, delay_ms);
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
  if (tunnel_) {
    tunnel_->on_deadline(kind);
  } else if (http_) {
    http_->on_deadline(kind);
  }
  refresh_deadline(Refresh::kRestart);
}

// ---------------------------------------------------------------------------------------------
// Client stream events (the upstream stream's go to the exchange or the tunnel directly)

void ClientConnection::on_data(net::Stream*, std::string_view data) {
  if (tunnel_) {
    tunnel_->on_client_data(data);
  } else {
    http_->on_client_data(data);
  }
  refresh_deadline(Refresh::kActivity);
}

void ClientConnection::on_end(net::Stream*, int status) {
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
  } else {
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
