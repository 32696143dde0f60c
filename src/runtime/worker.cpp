#include "limpet/runtime/worker.hpp"

#include <unistd.h>

#include <algorithm>

#include "limpet/net/fd_budget.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/client_connection.hpp"
#include "limpet/proxy/tunnel.hpp"
#include "limpet/util/log.hpp"

namespace limpet::runtime {
namespace {

// How often idle tunnels are looked at: tunnel_idle_timeout is honoured within this.
constexpr uint64_t kIdleSweepMs = 1000;
// While the fd budget is full: how often a paused listener looks for room (fds freed on any worker).
constexpr uint64_t kResumeCheckMs = 50;
// At most one "accept: too many open files" line per this many ms.
constexpr uint64_t kAcceptErrorLogMs = 1000;

}  // namespace

Worker::Worker(int index, std::function<void()> on_exit) : index_(index), on_exit_(std::move(on_exit)) {
  uv_loop_init(&loop_);
  uv_async_init(&loop_, &async_, on_async_cb);
  async_.data = this;
  context_.loop = &loop_;
  context_.graveyard.init(&loop_);
  uv_timer_init(&loop_, &idle_sweep_);
  idle_sweep_.data = this;
  uv_timer_start(&idle_sweep_, on_idle_sweep_cb, kIdleSweepMs, kIdleSweepMs);
  uv_unref(reinterpret_cast<uv_handle_t*>(&idle_sweep_));
  uv_timer_init(&loop_, &resume_timer_);
  resume_timer_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&resume_timer_));
}

Worker::~Worker() {
  join();
  uv_loop_close(&loop_);
}

void Worker::use_session_store(std::shared_ptr<const store::StoreSetup> setup, store::StoreStats* stats) {
  sessions_ = std::make_unique<store::SessionStore>(&loop_, &context_.buffers, std::move(setup), stats,
                                                    &context_.counters.tls_backends,
                                                    "worker " + std::to_string(index_));
  context_.sessions = sessions_.get();
}

void Worker::start(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> sockets) {
  if (sessions_) sessions_->start();  // the loop runs on the thread from here on
  apply(std::move(snapshot), std::move(sockets));
  thread_ = std::thread([this] { run(); });
}

void Worker::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  // Every connection is gone (the store's handles do not keep the loop running).
  context_.sessions = nullptr;
  if (sessions_) sessions_->stop();
  context_.graveyard.close();
  uv_run(&loop_, UV_RUN_DEFAULT);  // the graveyard's close callback
  LOG_DEBUG("worker %d stopped", index_);
  if (on_exit_) on_exit_();
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::publish(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> new_sockets) {
  {
    std::lock_guard lock(mailbox_mu_);
    pending_snapshot_ = std::move(snapshot);
    for (auto& s : new_sockets) pending_sockets_.push_back(std::move(s));
  }
  uv_async_send(&async_);
}

void Worker::drain_backends(std::vector<uint32_t> backend_ids) {
  {
    std::lock_guard lock(mailbox_mu_);
    pending_drains_.insert(pending_drains_.end(), backend_ids.begin(), backend_ids.end());
  }
  uv_async_send(&async_);
}

void Worker::hand_over(uint64_t spread_ms, std::function<void()> done) {
  {
    std::lock_guard lock(mailbox_mu_);
    hand_over_requested_ = true;
    hand_over_spread_ms_ = spread_ms;
    hand_over_done_ = std::move(done);
  }
  uv_async_send(&async_);
}

void Worker::stop(StopKind kind) {
  {
    std::lock_guard lock(mailbox_mu_);
    stop_requested_ = true;
    stop_kind_ = kind;
  }
  uv_async_send(&async_);
}

void Worker::on_async_cb(uv_async_t* handle) { static_cast<Worker*>(handle->data)->on_async(); }

void Worker::on_idle_sweep_cb(uv_timer_t* handle) {
  auto* self = static_cast<Worker*>(handle->data);
  const uint64_t now = uv_now(&self->loop_);
  self->context_.connections.for_each([now](proxy::ClientConnection* c) { c->sweep_idle(now); });
}

void Worker::on_async() {
  std::shared_ptr<const Snapshot> snapshot;
  std::vector<ListenSocket> sockets;
  std::vector<uint32_t> drains;
  bool stop = false;
  StopKind kind = StopKind::kGraceful;
  bool hand_over = false;
  uint64_t spread_ms = 0;
  std::function<void()> hand_over_done;
  {
    std::lock_guard lock(mailbox_mu_);
    drains.swap(pending_drains_);
    snapshot = std::move(pending_snapshot_);
    sockets = std::move(pending_sockets_);
    pending_sockets_.clear();
    stop = stop_requested_;
    kind = stop_kind_;
    hand_over = hand_over_requested_;
    spread_ms = hand_over_spread_ms_;
    if (hand_over) hand_over_done.swap(hand_over_done_);
  }
  if (snapshot && !stopping_ && !handed_over_) apply(std::move(snapshot), std::move(sockets));
  for (auto& s : sockets) ::close(s.fd);  // not taken by apply (stopping)
  if (!drains.empty() && !stopping_) {
    for (auto* c : context_.connections.snapshot()) c->drain_if_tunnel_to(drains);
  }
  if (hand_over && !handed_over_) begin_hand_over(spread_ms, hand_over_done);
  if (stop && !stopping_) begin_shutdown(kind);
}

void Worker::apply(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> sockets) {
  snapshot_ = std::move(snapshot);
  // Tunnel closes are spread, but must all be sent well within the shutdown deadline.
  const auto& server = snapshot_->config->server;
  context_.close_spread_ms = static_cast<uint64_t>(
      std::min(server.close_spread, server.shutdown_timeout / 2).count());
  context_.access_log.set_json(server.access_log_format == "json");
  for (auto& socket : sockets) {
    open_listener(socket);
    socket.fd = -1;
  }
  sockets.clear();
  // Listeners are matched by address: same address keeps its socket, gets the new config.
  std::map<std::string, const config::ListenerConfig*> wanted;
  for (const auto& lc : snapshot_->config->listeners) wanted[lc.address.text] = &lc;
  std::map<std::string, std::shared_ptr<proxy::ListenerContext>> contexts;  // one per address
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    auto want = wanted.find(it->first);
    if (want == wanted.end()) {
      close_listener(it->second.release());
      it = listeners_.erase(it);
      continue;
    }
    if (auto known = contexts.find(it->first); known != contexts.end()) {
      it->second->context = known->second;
      ++it;
      continue;
    }
    auto ctx = std::make_shared<proxy::ListenerContext>();
    ctx->owner = snapshot_;
    ctx->config = want->second;
    ctx->upstream = snapshot_->upstream(want->second->upstream);
    ctx->tls = snapshot_->server_tls(want->second->name);
    ctx->upstream_tls = snapshot_->client_tls(want->second->upstream);
    ctx->trusted_proxies = snapshot_->trusted_proxies(want->second->name);
    ctx->counters = snapshot_->counters(want->second->name);
    ctx->open_connections = it->second->open_connections;
    contexts[it->first] = ctx;
    it->second->context = std::move(ctx);
    ++it;
  }
}

void Worker::open_listener(const ListenSocket& socket) {
  auto listener = std::make_unique<Listener>();
  listener->worker = this;
  // Several sockets of one address (inherited) share the listener's connection limit.
  if (auto same = listeners_.find(socket.address); same != listeners_.end()) {
    listener->open_connections = same->second->open_connections;
  }
  uv_tcp_init(&loop_, &listener->handle);
  listener->handle.data = listener.get();
  uv_tcp_open(&listener->handle, socket.fd);
  const config::ListenerConfig* lc = nullptr;
  for (const auto& c : snapshot_->config->listeners) {
    if (c.address.text == socket.address) lc = &c;
  }
  int rc = uv_listen(reinterpret_cast<uv_stream_t*>(&listener->handle),
                     lc ? static_cast<int>(lc->backlog) : 511, on_connection_cb);
  if (rc != 0) {
    LOG_ERROR("listen on %s: %s", socket.address.c_str(), uv_strerror(rc));
    close_listener(listener.release());
    return;
  }
  listeners_.emplace(socket.address, std::move(listener));
}

void Worker::close_listener(Listener* listener) {
  listener->closing = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&listener->handle), on_listener_closed_cb);
}

void Worker::on_listener_closed_cb(uv_handle_t* handle) { delete static_cast<Listener*>(handle->data); }

void Worker::on_connection_cb(uv_stream_t* server, int status) {
  auto* listener = static_cast<Listener*>(server->data);
  listener->worker->on_connection(listener, status);
}

void Worker::on_connection(Listener* listener, int status) {
  if (status != 0) {
    note_accept_error(status);
    return;
  }
  if (!net::fd_budget().room_for_client()) {
    context_.pool.close_all();  // idle backend connections are the cheapest fds to give back
    if (!net::fd_budget().room_for_client()) {
      pause(listener);
      return;
    }
  }
  accept(listener);
}

// The fd budget is full: the connection libuv accepted stays unaccepted, and libuv stops polling
// the listener until uv_accept takes it (no busy loop, no EMFILE); the next clients wait in the
// kernel's backlog. The resume timer looks for room.
void Worker::pause(Listener* listener) {
  if (listener->paused) return;
  listener->paused = true;
  net::FdBudget& budget = net::fd_budget();
  if (budget.note_full()) {
    LOG_WARN("file descriptors: %lld of %lld for client connections in use (limit %lld): not accepting; "
             "new connections wait in the backlog until some close",
             static_cast<long long>(budget.in_use()), static_cast<long long>(budget.capacity()),
             static_cast<long long>(budget.limit()));
  }
  if (!uv_is_active(reinterpret_cast<uv_handle_t*>(&resume_timer_))) {
    uv_timer_start(&resume_timer_, on_resume_timer_cb, kResumeCheckMs, kResumeCheckMs);
  }
}

void Worker::on_resume_timer_cb(uv_timer_t* handle) { static_cast<Worker*>(handle->data)->resume_paused(); }

void Worker::resume_paused() {
  bool still_paused = false;  // (a listener closed meanwhile took its unaccepted connection along)
  for (auto& [address, listener] : listeners_) {
    if (!listener->paused) continue;
    if (!net::fd_budget().room_for_client()) {
      still_paused = true;
      continue;
    }
    listener->paused = false;
    accept(listener.get());  // uv_accept restarts libuv's polling of the listener
  }
  if (still_paused) return;
  net::FdBudget& budget = net::fd_budget();
  if (budget.note_room()) {
    LOG_INFO("file descriptors: accepting again (%lld of %lld in use)", static_cast<long long>(budget.in_use()),
             static_cast<long long>(budget.capacity()));
  }
  if (!budget.full()) uv_timer_stop(&resume_timer_);  // else: watching for the incident's end
}

// EMFILE despite the budget (fds limpet does not count ran out): libuv has already closed the
// connections it could not take. One line a second at most, with the count.
void Worker::note_accept_error(int status) {
  ++accept_errors_;
  const uint64_t now = uv_now(&loop_);
  if (accept_errors_logged_ms_ && now - *accept_errors_logged_ms_ < kAcceptErrorLogMs) return;
  LOG_WARN("accept: %s (%llu since the last such line)", uv_strerror(status),
           static_cast<unsigned long long>(accept_errors_));
  accept_errors_ = 0;
  accept_errors_logged_ms_ = now;
}

void Worker::accept(Listener* listener) {
  auto* client = new net::Stream(&loop_, &context_.buffers);
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listener->handle), client->uv()) != 0) {
    client->close();
    return;
  }
  const auto& ctx = listener->context;
  const uint32_t max = ctx ? ctx->config->max_connections : 0;
  if (stopping_ || !ctx || !ctx->upstream || (max > 0 && *ctx->open_connections >= max)) {
    // Over the limit: accepted and closed at once, so the backlog does not fill with clients
    // that would wait forever; counted for the operator.
    context_.counters.rejected.fetch_add(1, std::memory_order_relaxed);
    client->close();
    return;
  }
  context_.counters.accepted.fetch_add(1, std::memory_order_relaxed);
  ctx->counters->accepted.fetch_add(1, std::memory_order_relaxed);
  // Behind a PROXY header the TLS filter starts once the header is read (ClientConnection).
  if (ctx->tls != nullptr && !ctx->config->proxy_protocol) {
    client->set_filter(ctx->tls->new_filter(&context_.counters.tls_clients, net::peer_ip(client->tcp())));
  }
  proxy::ClientConnection::start(&context_, ctx, client);
}

void Worker::close_listeners() {
  for (auto& [address, listener] : listeners_) close_listener(listener.release());
  listeners_.clear();
}

// The sockets are the new process's now (same kernel sockets, passed over SCM_RIGHTS): closing
// our descriptors loses nothing in their accept queues. Idle keep-alive connections stay until
// the stop that follows the spread (closing one as its client sends would fail that request).
void Worker::begin_hand_over(uint64_t spread_ms, const std::function<void()>& done) {
  handed_over_ = true;
  close_listeners();  // uv_close closes the descriptor at once: no accept after this
  if (done) done();
  if (stopping_) return;
  context_.close_after_response = true;
  context_.close_spread_ms = spread_ms;
  for (auto* c : context_.connections.snapshot()) {
    c->close_tunnel_cleanly(proxy::Tunnel::kCloseGoingAway, context_.close_delay_ms());
  }
}

void Worker::begin_shutdown(StopKind kind) {
  if (kind == StopKind::kFast) context_.close_spread_ms = 0;  // tunnels get their Close at once
  stopping_ = true;
  context_.shutting_down = true;
  close_listeners();
  // A copy: begin_shutdown may close (and later free) connections.
  for (auto* c : context_.connections.snapshot()) c->begin_shutdown();
  context_.pool.close_all();
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_sweep_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&resume_timer_), nullptr);
}

}  // namespace limpet::runtime
