#include "limpet/runtime/server.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <set>
#include <thread>

#include "limpet/balancer/affinity_transfer.hpp"
#include "limpet/config/loader.hpp"
#include "limpet/config/values.hpp"
#include "limpet/net/fd_budget.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/runtime/address_probe.hpp"
#include "limpet/runtime/pid_file.hpp"
#include "limpet/runtime/service_notify.hpp"
#include "limpet/util/log.hpp"
#include "limpet/util/process_stats.hpp"

namespace limpet::runtime {
namespace {

constexpr int kSignals[] = {SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2};
constexpr uint64_t kHousekeepingMs = 1000;
// A fast stop (SIGTERM) gives the tunnels' Close frames this long to go out, at most.
constexpr uint64_t kFastStopMs = 1000;
// The new process of an upgrade reads the hand-over first, then must report ready within this.
constexpr int kHandOverReadMs = 10000;
constexpr uint64_t kUpgradeReadyMs = 30000;
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

Server::Server(std::string config_path, std::vector<std::string> argv)
    : config_path_(std::move(config_path)), launch_{current_executable(), std::move(argv)} {
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
                                            },
                                            [this](const admin::BackendChange& c) { return backend_change(c); }});
      std::vector<int> inherited = inherited_ ? inherited_->take("admin", admin.address.text) : std::vector<int>();
      Status st = inherited.empty() ? server->listen(admin.address.host, admin.address.port)
                                    : server->listen_fd(inherited.front());
      for (size_t i = 1; i < inherited.size(); ++i) ::close(inherited[i]);
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
  m.build = {kVersion, __VERSION__, uv_version_string(), tls::library_version()};
  m.process = read_process_stats();
  for (const auto& l : snapshot_->config->listeners) {
    const proxy::ListenerCounters* c = snapshot_->counters(l.name);
    if (c == nullptr) continue;
    m.listeners.push_back({l.name, l.address.text, c->accepted.load(), c->active_connections.load(), c->tunnels.load()});
  }
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
      bm.upgraded = st.upgraded_sessions.load();
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
    m.http2_connections += c.http2_connections.load();
    m.http2_streams += c.http2_streams.load();
    m.http2_resets_by_client += c.http2_resets_by_client.load();
    m.http2_websockets += c.http2_websockets.load();
    const auto rejected = [&c](proxy::ProxyReject why) {
      return c.proxy_protocol_rejected[static_cast<size_t>(why)].load();
    };
    m.proxy_protocol_untrusted += rejected(proxy::ProxyReject::kUntrusted);
    m.proxy_protocol_malformed += rejected(proxy::ProxyReject::kMalformed);
    m.proxy_protocol_timeout += rejected(proxy::ProxyReject::kTimeout);
    m.request_latency.add(c.request_latency.values());
    m.connect_latency.add(c.connect_latency.values());
    m.upstream_first_byte.add(c.upstream_first_byte.values());
    m.tunnel_duration.add(c.tunnel_duration.values());
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

Result<std::vector<ListenSocket>> Server::open_sockets(const config::ListenerConfig& listener, size_t count,
                                                       bool shared_listeners) {
  using R = Result<std::vector<ListenSocket>>;
  auto addr = net::resolve_numeric(listener.address.host, listener.address.port);
  if (!addr) return R::fail(addr.message());
  std::vector<ListenSocket> sockets;
  for (int fd : inherited_ ? inherited_->take("listener", listener.address.text) : std::vector<int>()) {
    sockets.push_back({listener.address.text, fd});
  }
  if (sockets.empty() && !shared_listeners) {
    Status free = check_address_free(listener.address, ("listener " + listener.name).c_str());
    if (!free) return R::fail(free.message());
  }
  while (sockets.size() < count) {  // inherited ones join the same SO_REUSEPORT group
    auto fd = net::open_reuseport_socket(*addr);
    // Listening here, on the main loop, and not only once a worker adopts the socket: a reload
    // reported done (or a start) must not refuse the connections that follow it.
    if (fd && ::listen(*fd, static_cast<int>(listener.backlog)) != 0) {
      const int error = errno;
      ::close(*fd);
      fd = Result<int>::fail(std::string("listen: ") + std::strerror(error));
    }
    if (!fd) {
      for (auto& s : sockets) ::close(s.fd);
      return R::fail("listener " + listener.name + " (" + listener.address.text + "): " + fd.message());
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

std::vector<handover::HandedSocket> Server::sockets_to_hand_over() const {
  std::vector<handover::HandedSocket> out;
  for (const auto& [address, fds] : listen_fds_) {
    for (int fd : fds) {
      if (handover::is_listening_socket(fd)) out.push_back({"listener", address, fd});
    }
  }
  if (admin_ && admin_->fd() >= 0) out.push_back({"admin", admin_address_, admin_->fd()});
  return out;
}

int Server::start_failed(const std::string& why) {
  std::fprintf(stderr, "limpet: %s\n", why.c_str());
  if (inherited_) inherited_->report_failed(why);
  return 1;
}

void Server::import_affinity(std::string_view blob, const char* what, log::Level level) {
  std::map<std::string, uint32_t, std::less<>> ids;
  for (const auto& [name, upstream] : snapshot_->upstreams) {
    for (const auto& b : upstream->backends()) ids.emplace(b.config->name, b.state->id);
  }
  auto stats = balancer::affinity_transfer::decode_into(
      blob, *shared_.affinity, [&ids](std::string_view name) -> std::optional<uint32_t> {
        auto it = ids.find(name);
        return it == ids.end() ? std::nullopt : std::optional<uint32_t>(it->second);
      });
  if (!stats) {
    LOG_ERROR("upgrade: %s not imported: %s", what, stats.message().c_str());
    return;
  }
  LIMPET_LOG(level, "upgrade: %s: %zu sessions imported, %zu already known, %zu for backends not configured any more",
             what, stats->imported, stats->already_known, stats->unknown_backend);
}

int Server::run() {
  fd_limit_ = net::FdBudget::raise_limit();
  // An upgrade's new process reads the old one's state before anything else: the old process
  // waits on it, and its listening sockets must be used instead of bound.
  auto inherited = UpgradeChild::from_environment(kHandOverReadMs);
  if (!inherited) return start_failed(inherited.message());
  inherited_ = std::move(*inherited);

  auto loaded = config::load_file(config_path_);
  if (!loaded) return start_failed(loaded.message());
  auto config = std::make_shared<const config::Config>(std::move(*loaded));
  apply_logging(config->server);
  shared_.affinity = std::make_shared<balancer::AffinityTable>(shared_.registry,
                                                               config->server.affinity_max_entries, shared_.clock);
  // Names are resolved before anything is bound: a name that does not resolve fails the start.
  auto resolved = Discovery::resolve_new(*config, {});
  if (!resolved) return start_failed(resolved.message());
  overlay_.resolved = std::move(*resolved);
  auto snapshot = build_next(*config, overlay_);
  if (!snapshot) return start_failed(snapshot.message());
  snapshot_ = *snapshot;
  generation_ = snapshot_->generation;
  file_config_ = config;

  size_t n = worker_count(config->server);
  configure_fd_budget(*config);
  LOG_INFO("file descriptors: limit %lld, %lld for client connections (2 each)",
           static_cast<long long>(net::fd_budget().limit()), static_cast<long long>(net::fd_budget().capacity()));
  std::vector<std::vector<ListenSocket>> per_worker(n);
  for (const auto& listener : config->listeners) {
    auto sockets = open_sockets(listener, n, config->server.shared_listeners);
    if (!sockets) {
      for (auto& list : per_worker) {
        for (auto& s : list) ::close(s.fd);
      }
      return start_failed(sockets.message());
    }
    for (size_t i = 0; i < sockets->size(); ++i) {
      per_worker[i % n].push_back((*sockets)[i]);
      listen_fds_[listener.address.text].push_back((*sockets)[i].fd);
    }
  }

  if (inherited_) {
    import_affinity(inherited_->affinity(), "sessions handed over", log::Level::kInfo);
    inherited_->drop_affinity();
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
  uv_timer_init(&loop_, &drain_end_timer_);
  drain_end_timer_.data = this;
  uv_async_init(&loop_, &handed_over_async_, on_handed_over_cb);
  handed_over_async_.data = this;
  uv_timer_init(&loop_, &housekeeping_timer_);
  housekeeping_timer_.data = this;
  uv_timer_start(&housekeeping_timer_, on_housekeeping_cb, kHousekeepingMs, kHousekeepingMs);
  started_ms_ = uv_now(&loop_);
  discovery_ = std::make_unique<Discovery>(
      &loop_, [this](const std::string& upstream, const std::string& backend, const config::ResolvedName& next) {
        return change_overlay([&](config::Overlay& o) { o.resolved[upstream][backend] = next; },
                              "DNS: upstream " + upstream + ", backend " + backend);
      });
  if (Status st = discovery_->schedule(*config, overlay_.resolved); !st) return start_failed(st.message());
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
  auto import_journal = [this](std::string_view blob) {
    import_affinity(blob, "sessions learned by the old process", log::Level::kDebug);
  };
  if (inherited_) {  // ready to serve; accept once the old process does not any more
    inherited_->close_unclaimed();
    inherited_->report_ready();
    if (!inherited_->wait_released(kHandOverReadMs, import_journal)) {
      LOG_WARN("upgrade: pid %d did not say it stopped accepting; accepting anyway",
               static_cast<int>(inherited_->parent()));
    }
  }
  for (size_t i = 0; i < n; ++i) workers_[i]->start(snapshot_, std::move(per_worker[i]));
  pid_file_ = config->server.pid_file;
  if (!pid_file_.empty()) {
    Status st = write_pid_file(pid_file_, ::getpid());
    if (!st) LOG_WARN("%s", st.message().c_str());
  }
  for (const auto& listener : config->listeners) {
    LOG_INFO("listening on %s (listener %s -> upstream %s)", listener.address.text.c_str(),
             listener.name.c_str(), listener.upstream.c_str());
  }
  LOG_INFO("limpet started: %zu workers, config %s", n, config_path_.c_str());
  if (inherited_) {
    LOG_INFO("upgrade: serving the sockets of pid %d, which drains and stops", static_cast<int>(inherited_->parent()));
    inherited_->watch_journal(&loop_, import_journal);
  }
  service_notify::ready("serving " + std::to_string(config->listeners.size()) + " listeners, " +
                        std::to_string(n) + " workers");

  uv_run(&loop_, UV_RUN_DEFAULT);
  for (auto& w : workers_) w->join();
  shared_.affinity->set_learn_observer(nullptr);  // no worker learns any more
  remove_pid_files();
  LOG_INFO("limpet stopped");
  return exit_code_;
}

void Server::remove_pid_files() {
  remove_pid_file_if_ours(pid_file_, ::getpid());
  if (!pid_file_.empty()) remove_pid_file_if_ours(old_pid_file(pid_file_), ::getpid());
}

void Server::exit_now() {
  remove_pid_files();
  ::_exit(0);
}

void Server::on_signal_cb(uv_signal_t* handle, int signum) {
  static_cast<Server*>(handle->data)->on_signal(signum);
}

void Server::on_signal(int signum) {
  switch (signum) {
    case SIGTERM:
    case SIGINT:
    case SIGQUIT:
      if (shutting_down_) {
        LOG_WARN("second stop signal: exiting now");
        exit_now();
      }
      begin_shutdown(signum == SIGQUIT ? Worker::StopKind::kGraceful : Worker::StopKind::kFast);
      break;
    case SIGHUP:
      reload();
      break;
    case SIGUSR2:
      begin_upgrade();
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
  if (shutting_down_ || handed_over_) return;
  if (upgrade_ && upgrade_->busy()) {
    LOG_WARN("SIGHUP ignored: a binary upgrade is in progress (the new process reads the file)");
    return;
  }
  LOG_INFO("SIGHUP: reloading %s", config_path_.c_str());
  service_notify::reloading();
  auto fail = [this](const std::string& why) {
    reloads_failed_.fetch_add(1, std::memory_order_relaxed);
    LOG_ERROR("reload failed, keeping the running configuration: %s", why.c_str());
    service_notify::reloaded("reload failed, running generation " + std::to_string(generation_) + ": " + why);
  };
  auto loaded = config::load_file(config_path_);
  if (!loaded) return fail(loaded.message());
  auto config = std::make_shared<const config::Config>(std::move(*loaded));
  // The admin API's changes end here; names already known keep their answer, new ones are resolved.
  config::Overlay overlay;
  auto resolved = Discovery::resolve_new(*config, overlay_.resolved);
  if (!resolved) return fail(resolved.message());
  overlay.resolved = std::move(*resolved);
  auto snapshot = build_next(*config, overlay);
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
  std::map<std::string, std::vector<int>> opened;
  for (const auto& listener : config->listeners) {
    if (running.count(listener.address.text)) continue;
    auto sockets = open_sockets(listener, workers_.size(), config->server.shared_listeners);
    if (!sockets) {
      close_opened();
      return fail(sockets.message());
    }
    for (size_t i = 0; i < sockets->size(); ++i) {
      per_worker[i % workers_.size()].push_back((*sockets)[i]);
      opened[listener.address.text].push_back((*sockets)[i].fd);
    }
    LOG_INFO("listening on %s (listener %s -> upstream %s)", listener.address.text.c_str(),
             listener.name.c_str(), listener.upstream.c_str());
  }

  // Removed addresses: their sockets are the workers' to close; never hand those numbers over.
  std::set<std::string> kept;
  for (const auto& l : config->listeners) kept.insert(l.address.text);
  for (auto it = listen_fds_.begin(); it != listen_fds_.end();) {
    it = kept.count(it->first) ? std::next(it) : listen_fds_.erase(it);
  }
  for (auto& [address, fds] : opened) listen_fds_[address] = std::move(fds);
  warn_if_store_changed(running_store_.get(), (*snapshot)->session_store.get());
  if (!overlay_.admin.empty()) LOG_INFO("reload: the admin API's backend changes end; the file's backends apply");
  publish(*snapshot, std::move(per_worker));
  file_config_ = config;
  overlay_ = std::move(overlay);
  if (Status st = discovery_->schedule(*config, overlay_.resolved); !st) LOG_ERROR("resolver: %s", st.message().c_str());
  apply_logging(config->server);
  apply_admin(config->admin);
  reloads_ok_.fetch_add(1, std::memory_order_relaxed);
  LOG_INFO("reloaded: generation %llu", static_cast<unsigned long long>(generation_));
  service_notify::reloaded("reloaded, generation " + std::to_string(generation_));
}

Result<std::shared_ptr<const Snapshot>> Server::build_next(const config::Config& file,
                                                           const config::Overlay& overlay) {
  auto effective = std::make_shared<const config::Config>(config::effective_config(file, overlay));
  return build_snapshot(effective, shared_, generation_ + 1,
                        snapshot_ ? still_draining(*snapshot_, *effective) : RetiredBackends{});
}

void Server::publish(std::shared_ptr<const Snapshot> next, std::vector<std::vector<ListenSocket>> per_worker) {
  note_removed_backends(*snapshot_, *next);
  generation_ = next->generation;
  snapshot_ = std::move(next);
  share_backends_with_fleet();
  configure_fd_budget(*snapshot_->config);
  checker_->update(health_targets(*snapshot_));
  per_worker.resize(workers_.size());
  for (size_t i = 0; i < workers_.size(); ++i) workers_[i]->publish(snapshot_, std::move(per_worker[i]));
}

Status Server::change_overlay(const std::function<void(config::Overlay&)>& edit, const std::string& what) {
  if (shutting_down_ || handed_over_) return Status::fail("this process is stopping");
  config::Overlay next = overlay_;
  edit(next);
  auto snapshot = build_next(*file_config_, next);
  if (!snapshot) return Status::fail(snapshot.message());
  publish(*snapshot, {});
  overlay_ = std::move(next);
  LOG_INFO("%s: published generation %llu", what.c_str(), static_cast<unsigned long long>(generation_));
  return Status::ok();
}

// PUT adds a backend or re-weights one; DELETE removes one (it drains as a reload removal
// does). Both last until the next reload, which returns to the file's backends.
admin::Reply Server::backend_change(const admin::BackendChange& c) {
  const balancer::Upstream* upstream = snapshot_->upstream(c.upstream);
  if (upstream == nullptr) return {404, "no upstream named \"" + c.upstream + "\""};
  const config::BackendConfig* current = nullptr;
  bool configured_name = false;  // a name of the file whose addresses are several backends
  for (const auto& b : upstream->config().backends) {
    if (b.name == c.backend) current = &b;
    if (b.from == c.backend) configured_name = true;
  }
  auto apply = [&](const std::function<void(config::AdminChanges&)>& edit, const std::string& done) -> admin::Reply {
    Status st = change_overlay([&](config::Overlay& o) { edit(o.admin[c.upstream]); },
                               "admin: upstream " + c.upstream + ", backend " + c.backend + ": " + done);
    if (!st) return {409, st.message()};
    return {200, "upstream " + c.upstream + ", backend " + c.backend + ": " + done};
  };
  if (c.kind == admin::BackendChange::Kind::kDelete) {
    if (current == nullptr && !configured_name) {
      return {404, "upstream " + c.upstream + " has no backend named \"" + c.backend + "\""};
    }
    return apply(
        [&](config::AdminChanges& a) {
          if (!a.added.erase(c.backend)) a.removed.insert(c.backend);
          a.weights.erase(c.backend);
        },
        "removed (draining)");
  }
  uint32_t weight = 0;
  if (c.weight) {
    if (*c.weight < 1 || *c.weight > 1000) return {400, "weight: expected an integer from 1 to 1000"};
    weight = static_cast<uint32_t>(*c.weight);
  }
  std::optional<config::Address> address;
  if (c.address) {
    auto parsed = config::parse_address(*c.address, config::AddressUse::kConnect);
    if (!parsed) return {400, "address: " + parsed.message()};
    address = *parsed;
  }
  if (current != nullptr || configured_name) {
    if (address && (current == nullptr || !(address->host == current->address.host &&
                                            address->port == current->address.port))) {
      return {409, "backend " + c.backend + " exists with another address: DELETE it first"};
    }
    if (weight == 0) return {400, "nothing to change: give a weight"};
    return apply(
        [&](config::AdminChanges& a) {
          if (auto it = a.added.find(c.backend); it != a.added.end()) {
            it->second.weight = weight;
          } else {
            a.weights[c.backend] = weight;
          }
        },
        "weight " + std::to_string(weight));
  }
  // A backend this upstream does not have (any more): a removed one of the file comes back, else
  // a new one, which needs an address.
  const auto* overlay = overlay_.admin.count(c.upstream) ? &overlay_.admin.at(c.upstream) : nullptr;
  if (overlay != nullptr && overlay->removed.count(c.backend)) {
    return apply(
        [&](config::AdminChanges& a) {
          a.removed.erase(c.backend);
          if (weight != 0) a.weights[c.backend] = weight;
        },
        "restored");
  }
  if (!address) return {400, "address: required for a new backend (\"IP:PORT\")"};
  if (c.backend.empty() || c.backend.size() > 128 || c.backend.find('/') != std::string::npos ||
      c.backend.find_first_of(" \t\r\n\"\\") != std::string::npos) {
    return {400, "name: up to 128 characters, without '/', spaces or quotes"};
  }
  config::BackendConfig b;
  b.name = c.backend;
  b.address = *address;
  b.weight = weight == 0 ? 1 : weight;
  b.file = "admin API";
  return apply([&](config::AdminChanges& a) { a.added[b.name] = b; },
               "added at " + b.address.text + ", weight " + std::to_string(b.weight));
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

void Server::begin_shutdown(Worker::StopKind kind) {
  shutting_down_ = true;
  const auto& server = snapshot_->config->server;
  uint64_t deadline_ms = static_cast<uint64_t>(server.shutdown_timeout.count());
  if (kind == Worker::StopKind::kFast) {
    deadline_ms = std::min(deadline_ms, kFastStopMs);
    LOG_INFO("fast stop: tunnels closed now, exit within %llu ms", static_cast<unsigned long long>(deadline_ms));
  } else {
    LOG_INFO("graceful stop: finishing in-flight requests, closing tunnels (shutdown_timeout %lld ms)",
             static_cast<long long>(server.shutdown_timeout.count()));
  }
  if (!handed_over_) service_notify::stopping();  // after a hand-over systemd follows the new process
  if (upgrade_ && upgrade_->busy() && !upgrade_->handed_over()) {
    upgrade_->abandon("this process is stopping");
  }
  uv_timer_stop(&housekeeping_timer_);
  uv_timer_stop(&drain_end_timer_);
  if (admin_) admin_->close();
  admin_.reset();
  checker_->stop();
  if (discovery_) discovery_->close();
  if (fleet_) fleet_->stop();  // the others stop counting our sessions now, not in 3 s
  uv_timer_start(&shutdown_timer_, on_shutdown_timeout_cb, deadline_ms, 0);
  for (auto& w : workers_) w->stop(kind);
}

void Server::on_shutdown_timeout_cb(uv_timer_t* handle) {
  LOG_WARN("stop deadline reached with work in flight: exiting now");
  static_cast<Server*>(handle->data)->exit_now();
}

// ---------------------------------------------------------------------------------------------
// Binary upgrade, old side

void Server::begin_upgrade() {
  if (shutting_down_ || handed_over_) {
    LOG_WARN("SIGUSR2 ignored: this process is stopping");
    return;
  }
  if (upgrade_ && upgrade_->busy()) {
    LOG_WARN("SIGUSR2 ignored: an upgrade is already in progress");
    return;
  }
  if (launch_.exe.empty() || launch_.argv.empty()) {
    LOG_ERROR("upgrade: cannot tell which binary this process runs (/proc/self/exe)");
    return;
  }
  LOG_INFO("SIGUSR2: upgrading: starting %s", launch_.exe.c_str());
  if (!pid_file_.empty()) move_pid_file_if_ours(pid_file_, old_pid_file(pid_file_), ::getpid());
  if (!journal_) {  // set once: a worker may be inside on_learn whenever the table has it
    journal_ = std::make_unique<handover::LearnJournal>(shared_.registry);
    shared_.affinity->set_learn_observer(journal_.get());
  }
  upgrade_.reset();
  upgrade_ = std::make_unique<UpgradeParent>(
      &loop_, journal_.get(),
      UpgradeParent::Hooks{[this](pid_t pid) { on_upgrade_ready(pid); },
                           [this](const std::string& why) { on_upgrade_failed(why); }});
  Status st = upgrade_->start(
      launch_, sockets_to_hand_over(),
      [this] { return balancer::affinity_transfer::encode_table(*shared_.affinity, shared_.registry); },
      kUpgradeReadyMs);
  if (!st) on_upgrade_failed(st.message());
}

void Server::on_upgrade_failed(const std::string& why) {
  if (!pid_file_.empty()) move_pid_file_if_ours(old_pid_file(pid_file_), pid_file_, ::getpid());
  service_notify::ready("upgrade failed, still serving: " + why);
}

// The new process serves every listening socket: stop accepting here, move clients over, close
// the tunnels (1001) spread over upgrade_drain_timeout (default close_spread), then stop.
void Server::on_upgrade_ready(pid_t pid) {
  handed_over_ = true;
  const auto& server = snapshot_->config->server;
  const auto spread = server.upgrade_drain_timeout.count() > 0 ? server.upgrade_drain_timeout : server.close_spread;
  LOG_INFO("upgrade: pid %d serves now; this process stops accepting, closes its tunnels over %lld ms, then stops",
           static_cast<int>(pid), static_cast<long long>(spread.count()));
  service_notify::main_pid(pid, "upgraded to pid " + std::to_string(pid));
  if (admin_) admin_->close();  // the new process serves the same socket
  admin_.reset();
  admin_address_.clear();
  workers_handing_over_ = static_cast<int>(workers_.size());
  for (auto& w : workers_) {
    w->hand_over(static_cast<uint64_t>(spread.count()), [this] {
      if (--workers_handing_over_ == 0) uv_async_send(&handed_over_async_);
    });
  }
  uv_timer_start(&drain_end_timer_, on_drain_end_cb, static_cast<uint64_t>(spread.count()), 0);
}

void Server::on_handed_over_cb(uv_async_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  if (self->upgrade_) self->upgrade_->release();
}

void Server::on_drain_end_cb(uv_timer_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  if (!self->shutting_down_) self->begin_shutdown(Worker::StopKind::kGraceful);
}

void Server::on_housekeeping_cb(uv_timer_t* handle) {
  auto* self = static_cast<Server*>(handle->data);
  self->shared_.affinity->expire();
  self->run_due_drains();
  if (self->discovery_) self->discovery_->tick();
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
  if (discovery_) discovery_->close();
  if (upgrade_) upgrade_->close();
  if (inherited_) inherited_->close();
  for (auto& s : signals_) uv_close(reinterpret_cast<uv_handle_t*>(&s), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&worker_exit_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&shutdown_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&housekeeping_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&drain_end_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&handed_over_async_), nullptr);
}

}  // namespace limpet::runtime
