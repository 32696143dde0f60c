#include "limpet/runtime/server.hpp"

#include <algorithm>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include "limpet/config/loader.hpp"
#include "limpet/net/fd_budget.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/util/log.hpp"

namespace limpet::runtime {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1};
constexpr uint64_t kHousekeepingMs = 1000;
constexpr const char* kVersion = LIMPET_VERSION;

admin::AffinityMetrics affinity_metrics(const balancer::AffinityTable& table) {
  auto s = table.stats();
  admin::AffinityMetrics m;
  m.entries = s.entries;
  m.hits = s.hits;
  m.misses = s.misses;
  m.evictions = s.evictions;
  m.expirations = s.expirations;
  m.learned = s.learned;
  m.unparsable_handshakes = s.unparsable_handshakes;
  return m;
}

admin::SessionStoreMetrics store_metrics(const store::StoreStats& stats, const store::StoreSetup& setup,
                                         const std::string& instance) {
  admin::SessionStoreMetrics m;
  m.enabled = true;
  m.up = stats.up();
  m.address = setup.config.address.text;
  m.instance = instance;
  for (size_t i = 0; i < store::kLookupResults; ++i) {
    m.lookups.emplace_back(store::to_string(static_cast<store::LookupResult>(i)), stats.lookups[i].load());
  }
  for (size_t i = 0; i < store::kPublishResults; ++i) {
    m.publishes.emplace_back(store::to_string(static_cast<store::PublishResult>(i)), stats.publishes[i].load());
  }
  m.refreshes = stats.refreshes.load();
  m.deletes = stats.deletes.load();
  m.connection_errors = stats.connection_errors.load();
  m.latency = stats.latency.values();
  return m;
}

// This instance's name among the fleet's counts: configured, else host:pid (unique while it runs).
std::string store_instance_name(const config::SessionStoreConfig& c) {
  if (!c.instance.empty()) return c.instance;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "limpet");
  return std::string(host) + ":" + std::to_string(::getpid());
}

void warn_if_store_changed(const store::StoreSetup* running, const store::StoreSetup* loaded) {
  const config::SessionStoreConfig none;
  if (store::same_settings(running ? running->config : none, loaded ? loaded->config : none)) return;
  LOG_WARN("reload: [session_store] changed; the change takes effect at the next restart (the running "
           "instance keeps %s)", running ? running->config.address.text.c_str() : "no session store");
}

std::vector<health::Target> health_targets(const Snapshot& snapshot) {
  std::vector<health::Target> targets;
  for (const auto& [name, upstream] : snapshot.upstreams) {
    auto tls = snapshot.upstream_tls.find(name);
    targets.push_back({upstream, tls == snapshot.upstream_tls.end() ? nullptr : tls->second});
  }
  return targets;
}

// Backends of `before` (configured or already retired) that `after` no longer names anywhere:
// their known sessions keep reaching them until their drain ends (Server::end_retirement).
RetiredBackends still_draining(const Snapshot& before, const config::Config& after) {
  std::set<std::string> named;
  for (const auto& u : after.upstreams) {
    for (const auto& b : u.backends) named.insert(b.name);
  }
  RetiredBackends retired;
  for (const auto& u : after.upstreams) {
    const balancer::Upstream* old = before.upstream(u.name);
    if (old == nullptr) continue;
    for (const auto& b : old->backends()) {
      if (!named.count(b.config->name)) retired[u.name].push_back(*b.config);
    }
  }
  return retired;
}

size_t worker_count(const config::ServerConfig& server) {
  if (server.workers > 0) return server.workers;
  unsigned cores = std::thread::hardware_concurrency();
  return cores > 0 ? cores : 1;
}

}  // namespace

Server::Server(std::string config_path) : config_path_(std::move(config_path)) {
  uv_loop_init(&loop_);
}

Server::~Server() {
  workers_.clear();
  uv_loop_close(&loop_);
}

void Server::apply_logging(const config::ServerConfig& server) {
  log::Level level = log::Level::kInfo;
  if (log::parse_level(server.log_level, &level)) log::set_level(level);
  std::string error;
  if (!log::open_target(server.error_log, &error)) LOG_ERROR("error_log: %s", error.c_str());
  if (!log::open_access(server.access_log, &error)) LOG_ERROR("access_log: %s", error.c_str());
}

void Server::apply_admin(const config::AdminConfig& admin) {
  std::string wanted = admin.enabled ? admin.address.text : "";
  if (wanted != admin_address_) {
    if (admin_) admin_->close();
    admin_.reset();
    admin_address_.clear();
    if (admin.enabled) {
      auto server = std::make_unique<admin::AdminServer>(
          &loop_, admin::AdminServer::Hooks{[this] { return collect_metrics(); },
                                            [this](const std::string& name, const std::string& action) {
                                              return backend_action(name, action);
                                            }});
      Status st = server->listen(admin.address.host, admin.address.port);
      if (!st) {
        LOG_ERROR("%s", st.message().c_str());
        return;
      }
      LOG_INFO("admin listener on %s", admin.address.text.c_str());
      admin_ = std::move(server);
      admin_address_ = wanted;
    }
  }
  if (admin_) admin_->set_token(admin.token);
}

// Admin write operations act on the shared BackendState, so they hold across reloads.
Status Server::backend_action(const std::string& name, const std::string& action) {
  for (const auto& [upstream_name, upstream] : snapshot_->upstreams) {
    for (const auto& b : upstream->backends()) {
      if (b.config->name != name) continue;
      if (action == "drain") {
        b.state->draining.store(true);
        uint32_t id = b.state->id;
        admin_drained_.insert(id);  // unlike a reload removal, a reload does not undo it
        pending_drains_.push_back(
            {uv_now(&loop_) + static_cast<uint64_t>(snapshot_->config->server.drain_timeout.count()),
             {id}});
      } else if (action == "enable") {
        b.state->draining.store(false);
        b.state->disabled.store(false);
        admin_drained_.erase(b.state->id);
      } else if (action == "disable") {
        b.state->disabled.store(true);
      }
      return Status::ok();
    }
  }
  return Status::fail("no backend named \"" + name + "\"");
}

admin::MetricsSnapshot Server::collect_metrics() const {
  admin::MetricsSnapshot m;
  m.version = kVersion;
  m.config_file = config_path_;
  m.generation = generation_;
  m.uptime_seconds = static_cast<double>(uv_now(const_cast<uv_loop_t*>(&loop_)) - started_ms_) / 1000.0;
  m.reloads_ok = reloads_ok_.load();
  m.reloads_failed = reloads_failed_.load();
  for (const auto& [upstream_name, upstream] : snapshot_->upstreams) {
    for (const auto& b : upstream->backends()) {
      const auto& st = *b.state;
      admin::BackendMetrics bm;
      bm.upstream = upstream_name;
      bm.name = b.config->name;
      bm.address = b.config->address.text;
      bm.weight = b.config->weight;
      bm.state = st.disabled.load()   ? "disabled"
                 : !st.up.load()      ? "down"
                 : st.draining.load() ? "draining"
                                      : "up";
      bm.in_flight = st.in_flight.load();
      bm.tunnels = st.tunnels.load();
      bm.sessions = st.sessions.load();
      bm.fleet_sessions = st.fleet_sessions.load();
      bm.requests = st.requests.load();
      bm.failures = st.failures.load();
      for (int c = 1; c <= 5; ++c) bm.responses_by_class[c] = st.responses_by_class[c].load();
      const config::HealthCheck& check = upstream->config().health;
      if (check.kind != config::HealthCheck::Kind::kNone) {
        bm.health_check = check.kind == config::HealthCheck::Kind::kHttp ? "http" : "engineio";
        bm.checks_ok = st.checks_ok.load();
        bm.checks_failed = st.checks_failed.load();
        bm.last_check = st.last_check();
      }
      m.backends.push_back(std::move(bm));
    }
  }
  for (const auto& w : workers_) {
    const auto& c = w->counters();
    admin::WorkerMetrics wm;
    wm.accepted = c.accepted.load();
    wm.rejected = c.rejected.load();
    wm.requests = c.requests.load();
    wm.active_connections = c.active_connections.load();
    m.workers.push_back(wm);
    for (int i = 0; i < 6; ++i) m.responses_by_class[i] += c.responses_by_class[i].load();
    m.tunnels_opened += c.tunnels_opened.load();
    m.tunnels_closed_cleanly += c.tunnels_closed_cleanly.load();
    m.ws_messages_to_backend += c.ws_messages_to_backend.load();
    m.ws_messages_to_client += c.ws_messages_to_client.load();
    m.ws_refused_too_big += c.ws_messages_too_big.load();
    m.ws_refused_protocol_error += c.ws_protocol_errors.load();
    m.bytes_from_clients += c.bytes_from_clients.load();
    m.bytes_to_clients += c.bytes_to_clients.load();
    m.retries += c.retries.load();
    m.client_aborts += c.client_aborts.load();
    m.stale_resends += c.stale_resends.load();
    m.pool_not_fresh += c.pool_not_fresh.load();
    m.handshake_retries += c.handshake_retries.load();
    const auto rejected = [&c](proxy::ProxyReject why) {
      return c.proxy_protocol_rejected[static_cast<size_t>(why)].load();
    };
    m.proxy_protocol_untrusted += rejected(proxy::ProxyReject::kUntrusted);
    m.proxy_protocol_malformed += rejected(proxy::ProxyReject::kMalformed);
    m.proxy_protocol_timeout += rejected(proxy::ProxyReject::kTimeout);
    m.request_latency.add(c.request_latency.values());
    m.connect_latency.add(c.connect_latency.values());
  }
  const net::FdBudget& fds = net::fd_budget();
  m.fd_limit = fds.limit();
  m.fd_capacity = fds.capacity();
  m.fd_in_use = fds.in_use();
  m.fd_budget_full = fds.incidents();
  m.affinity = affinity_metrics(*shared_.affinity);
  if (running_store_) m.session_store = store_metrics(shared_.store_stats, *running_store_, fleet_->instance());
  return m;
}

Result<std::vector<ListenSocket>> Server::open_sockets(const config::ListenerConfig& listener,
                                                       size_t count) {
  auto addr = net::resolve_numeric(listener.address.host, listener.address.port);
  if (!addr) return Result<std::vector<ListenSocket>>::fail(addr.message());
  std::vector<ListenSocket> sockets;
  for (size_t i = 0; i < count; ++i) {
    auto fd = net::open_reuseport_socket(*addr);
    if (!fd) {
      for (auto& s : sockets) ::close(s.fd);
      return Result<std::vector<ListenSocket>>::fail("listener " + listener.name + " (" +
                                                     listener.address.text + "): " + fd.message());
    }
    sockets.push_back({listener.address.text, *fd});
  }
  return sockets;
}

// fds limpet does not count per socket (net/fd_budget.hpp): stdio, logs, the pid file, each
// worker's loop (epoll, eventfd, a listening socket per listener), the admin listener's few
// connections, and a health check's connection per backend.
uint64_t Server::fd_reserve(const config::Config& config, size_t workers) {
  uint64_t backends = 0;
  for (const auto& u : config.upstreams) backends += u.backends.size();
  return 64 + workers * (4 + config.listeners.size()) + backends;
}

void Server::configure_fd_budget(const config::Config& config) {
  const uint64_t reserve = fd_reserve(config, workers_.empty() ? worker_count(config.server) : workers_.size());
  net::fd_budget().configure(fd_limit_, reserve);
}

int Server::run() {
  fd_limit_ = net::FdBudget::raise_limit();
  auto loaded = config::load_file(config_path_);
  if (!loaded) {
    std::fprintf(stderr, "limpet: %s\n", loaded.message().c_str());
    return 1;
  }
  auto config = std::make_shared<const config::Config>(std::move(*loaded));
  apply_logging(config->server);
  shared_.affinity = std::make_shared<balancer::AffinityTable>(shared_.registry,
                                                               config->server.affinity_max_entries, shared_.clock);
  auto snapshot = build_snapshot(config, shared_, ++generation_);
  if (!snapshot) {
    std::fprintf(stderr, "limpet: %s\n", snapshot.message().c_str());
    return 1;
  }
  snapshot_ = *snapshot;

  size_t n = worker_count(config->server);
  configure_fd_budget(*config);
  LOG_INFO("file descriptors: limit %lld, %lld for client connections (2 each)",
           static_cast<long long>(net::fd_budget().limit()), static_cast<long long>(net::fd_budget().capacity()));
  std::vector<std::vector<ListenSocket>> per_worker(n);
  for (const auto& listener : config->listeners) {
    auto sockets = open_sockets(listener, n);
    if (!sockets) {
      std::fprintf(stderr, "limpet: %s\n", sockets.message().c_str());
      for (auto& list : per_worker) {
        for (auto& s : list) ::close(s.fd);
      }
      return 1;
    }
    for (size_t i = 0; i < n; ++i) per_worker[i].push_back((*sockets)[i]);
  }

  if (!config->server.pid_file.empty()) {
    std::ofstream pid(config->server.pid_file, std::ios::trunc);
    pid << ::getpid() << "\n";
    if (!pid) LOG_WARN("cannot write pid file %s", config->server.pid_file.c_str());
  }

  std::signal(SIGPIPE, SIG_IGN);
  signals_.resize(std::size(kSignals));
  for (size_t i = 0; i < signals_.size(); ++i) {
    uv_signal_init(&loop_, &signals_[i]);
    signals_[i].data = this;
    uv_signal_start(&signals_[i], on_signal_cb, kSignals[i]);
  }
  uv_async_init(&loop_, &worker_exit_, on_worker_exit_cb);
  worker_exit_.data = this;
  uv_timer_init(&loop_, &shutdown_timer_);
  shutdown_timer_.data = this;
  uv_timer_init(&loop_, &housekeeping_timer_);
  housekeeping_timer_.data = this;
  uv_timer_start(&housekeeping_timer_, on_housekeeping_cb, kHousekeepingMs, kHousekeepingMs);
  started_ms_ = uv_now(&loop_);
  apply_admin(config->admin);
  checker_ = std::make_unique<health::Checker>(&loop_, shared_.clock);
  checker_->update(health_targets(*snapshot_));
  running_store_ = snapshot_->session_store;
  if (running_store_) {
    fleet_ = std::make_unique<store::FleetCounts>(&loop_, &fleet_buffers_, snapshot_->session_store,
                                                  &shared_.store_stats, &fleet_tls_counters_,
                                                  store_instance_name(snapshot_->session_store->config));
    share_backends_with_fleet();
    fleet_->start();
    LOG_INFO("session store %s (instance %s)", snapshot_->session_store->config.address.text.c_str(),
             fleet_->instance().c_str());
  }

  workers_running_ = static_cast<int>(n);
  for (size_t i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(static_cast<int>(i), [this] {
      --workers_running_;
      uv_async_send(&worker_exit_);
    }));
    if (snapshot_->session_store) workers_.back()->use_session_store(snapshot_->session_store, &shared_.store_stats);
  }
  for (size_t i = 0; i < n; ++i) workers_[i]->start(snapshot_, std::move(per_worker[i]));
  for (const auto& listener : config->listeners) {
    LOG_INFO("listening on %s (listener %s -> upstream %s)", listener.address.text.c_str(),
             listener.name.c_str(), listener.upstream.c_str());
  }
  LOG_INFO("limpet started: %zu workers, config %s", n, config_path_.c_str());

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  if (!config->server.pid_file.empty()) ::unlink(config->server.pid_file.c_str());
  LOG_INFO("limpet stopped");
  return exit_code_;
}

void Server::on_signal_cb(uv_signal_t* handle, int signum) {
  static_cast<Server*>(handle->data)->on_signal(signum);
}

void Server::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGINT:
      if (shutting_down_) {
        LOG_WARN("second stop signal: exiting now");
        ::_exit(0);
      }
      begin_shutdown();
      break;
    case SIGQUIT:
      LOG_WARN("SIGQUIT: exiting now");
      ::_exit(0);
    case SIGHUP:
      reload();
      break;
    case SIGUSR1: {
      std::string error;
      if (!log::reopen(&error)) LOG_ERROR("reopen logs: %s", error.c_str());
      break;
    }
    default:
      break;
  }
}

// Builds the whole new state off to the side; any failure leaves the running one untouched.
void Server::reload() {
  if (shutting_down_) return;
  LOG_INFO("SIGHUP: reloading %s", config_path_.c_str());
  auto fail = [this](const std::string& why) {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    LOG_ERROR("reload failed, keeping the running configuration: %s", why.c_str());
  };
  auto loaded = config::load_file(config_path_);
  if (!loaded) return fail(loaded.message());
  auto config = std::make_shared<const config::Config>(std::move(*loaded));
  auto snapshot = build_snapshot(config, shared_, generation_ + 1, still_draining(*snapshot_, *config));
  if (!snapshot) return fail(snapshot.message());

  // Listeners are identified by address: only new addresses get sockets (one per worker).
  std::set<std::string> running;
  for (const auto& l : snapshot_->config->listeners) running.insert(l.address.text);
  std::vector<std::vector<ListenSocket>> per_worker(workers_.size());
  auto close_opened = [&per_worker] {
    for (auto& list : per_worker) {
      for (auto& s : list) ::close(s.fd);
    }
  };
  for (const auto& listener : config->listeners) {
    if (running.count(listener.address.text)) continue;
    auto sockets = open_sockets(listener, workers_.size());
    if (!sockets) {
      close_opened();
      return fail(sockets.message());
    }
    for (size_t i = 0; i < workers_.size(); ++i) per_worker[i].push_back((*sockets)[i]);
    LOG_INFO("listening on %s (listener %s -> upstream %s)", listener.address.text.c_str(),
             listener.name.c_str(), listener.upstream.c_str());
  }

  warn_if_store_changed(running_store_.get(), (*snapshot)->session_store.get());
  note_removed_backends(*snapshot_, **snapshot);
  generation_ = (*snapshot)->generation;
  snapshot_ = *snapshot;
  share_backends_with_fleet();
  apply_logging(config->server);
  apply_admin(config->admin);
  configure_fd_budget(*config);
  checker_->update(health_targets(*snapshot_));
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->publish(snapshot_, std::move(per_worker[i]));
  reloads_ok_.fetch_add(1, std::memory_order_relaxed);
  LOG_INFO("reloaded: generation %llu", static_cast<unsigned long long>(generation_));
}

// A backend that left the configuration takes no new sessions; its tunnels are closed cleanly
// once drain_timeout has passed. A backend that comes back is no longer draining.
void Server::note_removed_backends(const Snapshot& before, const Snapshot& after) {
  std::set<uint32_t> present;
  for (const auto& [name, upstream] : after.upstreams) {
    for (const auto& b : upstream->backends()) {
      if (b.retired) continue;
      present.insert(b.state->id);
      if (removed_backends_.erase(b.state->id)) b.state->draining.store(false);
    }
  }
  std::vector<uint32_t> removed;
  for (const auto& [name, upstream] : before.upstreams) {
    for (const auto& b : upstream->backends()) {
      if (present.count(b.state->id) || removed_backends_.count(b.state->id)) continue;
      b.state->draining.store(true);
      removed_backends_.insert(b.state->id);
      removed.push_back(b.state->id);
      LOG_INFO("backend %s left the configuration: draining, tunnels close in %lld ms",
               b.state->name.c_str(),
               static_cast<long long>(after.config->server.drain_timeout.count()));
    }
  }
  if (removed.empty()) return;
  pending_drains_.push_back(
      {uv_now(&loop_) + static_cast<uint64_t>(after.config->server.drain_timeout.count()),
       std::move(removed)});
}

// Housekeeping: drains whose time has come go to the workers.
void Server::run_due_drains() {
  uint64_t now = uv_now(&loop_);
  for (auto it = pending_drains_.begin(); it != pending_drains_.end();) {
    if (it->due_ms > now) {
      ++it;
      continue;
    }
    std::vector<uint32_t> still_removed;
    for (uint32_t id : it->backend_ids) {
      if (removed_backends_.count(id) || admin_drained_.count(id)) still_removed.push_back(id);
    }
    if (!still_removed.empty()) {
      for (auto& w : workers_) w->drain_backends(still_removed);
      end_retirement(still_removed);
    }
    it = pending_drains_.erase(it);
  }
}

// The drain of removed backends ended: publish the running snapshot without them, so their
// sessions are placed anew. Only the upstreams that held them are rebuilt.
void Server::end_retirement(const std::vector<uint32_t>& backend_ids) {
  auto next = std::make_shared<Snapshot>(*snapshot_);
  bool changed = false;
  for (auto& [name, upstream] : next->upstreams) {
    std::vector<config::BackendConfig> keep;
    bool ends = false;
    for (const auto& b : upstream->backends()) {
      if (!b.retired) continue;
      const bool due = std::find(backend_ids.begin(), backend_ids.end(), b.state->id) != backend_ids.end();
      ends = ends || due;
      if (!due) keep.push_back(*b.config);
    }
    if (!ends) continue;
    auto rebuilt = balancer::Upstream::build(upstream->config(), shared_.registry, shared_.affinity, shared_.clock,
                                             std::move(keep));
    if (!rebuilt) {  // it was built from the same settings before; cannot fail, but never publish half
      LOG_ERROR("upstream %s: dropping drained backends: %s", name.c_str(), rebuilt.message().c_str());
      return;
    }
    upstream = std::move(*rebuilt);
    changed = true;
  }
  if (!changed) return;
  snapshot_ = std::move(next);
  checker_->update(health_targets(*snapshot_));
  share_backends_with_fleet();
  for (auto& w : workers_) w->publish(snapshot_, {});
}

// Every backend of the running snapshot, once per name (the registry shares states by name).
void Server::share_backends_with_fleet() {
  if (!fleet_) return;
  std::vector<std::shared_ptr<balancer::BackendState>> states;
  std::set<uint32_t> seen;
  for (const auto& [name, upstream] : snapshot_->upstreams) {
    for (const auto& b : upstream->backends()) {
      if (seen.insert(b.state->id).second) states.push_back(b.state);
    }
  }
  fleet_->set_backends(std::move(states));
}

void Server::begin_shutdown() {
  shutting_down_ = true;
  LOG_INFO("stopping: finishing in-flight requests (shutdown_timeout %lld ms)",
           static_cast<long long>(snapshot_->config->server.shutdown_timeout.count()));
  uv_timer_stop(&housekeeping_timer_);
  if (admin_) admin_->close();
  admin_.reset();
  checker_->stop();
  if (fleet_) fleet_->stop();  // the others stop counting our sessions now, not in 3 s
  uv_timer_start(&shutdown_timer_, on_shutdown_timeout_cb,
                 static_cast<uint64_t>(snapshot_->config->server.shutdown_timeout.count()), 0);
  for (auto& w : workers_) w->stop();
}

void Server::on_shutdown_timeout_cb(uv_timer_t* handle) {
  (void)handle;
  LOG_WARN("shutdown_timeout reached with work in flight: exiting now");
  ::_exit(0);
}

void Server::on_housekeeping_cb(uv_timer_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  self->shared_.affinity->expire();
  self->run_due_drains();
}

void Server::on_worker_exit_cb(uv_async_t* handle) { static_cast<Server*>(handle->data)->on_worker_exit(); }

void Server::on_worker_exit() {
  if (workers_running_.load() > 0) return;
  // A worker's last act is uv_async_send(&worker_exit_): join them all before closing it, or a
  // late sender would touch a closed handle.
  for (auto& w : workers_) w->join();
  finish();
}

void Server::finish() {
  for (auto& s : signals_) uv_close(reinterpret_cast<uv_handle_t*>(&s), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&worker_exit_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&housekeeping_timer_), nullptr);
}

}  // namespace limpet::runtime
