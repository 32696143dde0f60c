// The main thread: owns the configuration, the shared state and the workers; turns signals into
// lifecycle steps as nginx users expect them (SIGQUIT graceful stop, SIGTERM/SIGINT fast stop, a
// second stop signal exits at once, SIGHUP reload, SIGUSR1 log reopen, SIGUSR2 binary upgrade)
// and runs the periodic housekeeping (affinity expiry, due drains).
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "limpet/admin/admin_server.hpp"
#include "limpet/config/overlay.hpp"
#include "limpet/health/checker.hpp"
#include "limpet/runtime/discovery.hpp"
#include "limpet/runtime/handover.hpp"
#include "limpet/runtime/snapshot.hpp"
#include "limpet/runtime/upgrade.hpp"
#include "limpet/runtime/worker.hpp"
#include "limpet/store/fleet_counts.hpp"
#include "limpet/util/log.hpp"

namespace limpet::runtime {

class Server {
 public:
  // `argv`: the command line, for the new process of a binary upgrade.
  Server(std::string config_path, std::vector<std::string> argv);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the config, opens the listening sockets and runs until stopped. Returns the exit code.
  int run();

 private:
  static void on_signal_cb(uv_signal_t* handle, int signum);
  static void on_worker_exit_cb(uv_async_t* handle);
  static void on_shutdown_timeout_cb(uv_timer_t* handle);
  static void on_housekeeping_cb(uv_timer_t* handle);
  static void on_drain_end_cb(uv_timer_t* handle);
  static void on_handed_over_cb(uv_async_t* handle);
  void on_signal(int signum);
  // Startup failed: say why (to the old process too, in an upgrade) and return the exit code.
  int start_failed(const std::string& why);
  void begin_shutdown(Worker::StopKind kind);
  [[noreturn]] void exit_now();
  void remove_pid_files();
  // Binary upgrade, old side: start the new process; it reports ready, then hand over and drain.
  void begin_upgrade();
  void on_upgrade_ready(pid_t pid);
  void on_upgrade_failed(const std::string& why);
  // Binary upgrade, new side: the sessions the old process knew (and learns while draining).
  void import_affinity(std::string_view blob, const char* what, limpet::log::Level level);
  void on_worker_exit();
  void reload();
  // The one way a configuration reaches the workers (a reload, a DNS answer, an admin change):
  // the snapshot of `file` with `overlay` laid over it, built next to the running one ...
  Result<std::shared_ptr<const Snapshot>> build_next(const config::Config& file, const config::Overlay& overlay);
  // ... and published: removed backends drain, health checks, fleet counts, fd budget, workers.
  void publish(std::shared_ptr<const Snapshot> next, std::vector<std::vector<ListenSocket>> per_worker);
  // Edits a copy of the overlay and publishes it; nothing changes when it cannot be built.
  Status change_overlay(const std::function<void(config::Overlay&)>& edit, const std::string& what);
  admin::Reply backend_change(const admin::BackendChange& change);
  void note_removed_backends(const Snapshot& before, const Snapshot& after);
  void run_due_drains();
  void end_retirement(const std::vector<uint32_t>& backend_ids);
  void finish();
  // At least `count` sockets for `listener`: inherited ones first (all of them), then new ones;
  // a new address is refused when a live process listens on it (unless shared_listeners).
  Result<std::vector<ListenSocket>> open_sockets(const config::ListenerConfig& listener, size_t count,
                                                 bool shared_listeners);
  // Listener sockets of the running configuration, by address: what an upgrade hands over.
  std::vector<handover::HandedSocket> sockets_to_hand_over() const;
  void apply_logging(const config::ServerConfig& server);
  // Admin listener: (re)opened when its address changes, token updated on every reload.
  void apply_admin(const config::AdminConfig& admin);
  admin::MetricsSnapshot collect_metrics() const;
  // The fd budget (net/fd_budget.hpp): RLIMIT_NOFILE less what the config needs besides client
  // connections; set at start and on every reload.
  static uint64_t fd_reserve(const config::Config& config, size_t workers);
  void configure_fd_budget(const config::Config& config);
  Status backend_action(const std::string& name, const std::string& action);

  std::string config_path_;
  Launch launch_;          // what an upgrade starts (this binary's path, the same command line)
  std::string pid_file_;   // as read at start
  uv_loop_t loop_{};
  std::vector<uv_signal_t> signals_;
  uv_async_t worker_exit_{};
  uv_timer_t shutdown_timer_{};
  uv_timer_t housekeeping_timer_{};
  uv_timer_t drain_end_timer_{};  // after a hand-over: the spread is over, stop
  uv_async_t handed_over_async_{};  // the last worker stopped accepting: the new process may
  std::atomic<int> workers_handing_over_{0};
  // Upgrade: the sockets this process serves (fd numbers as opened; valid while configured),
  // the old side of an upgrade and the journal, the new side's channel.
  std::map<std::string, std::vector<int>> listen_fds_;
  std::unique_ptr<handover::LearnJournal> journal_;  // lives as long as the table may call it
  std::unique_ptr<UpgradeParent> upgrade_;
  std::unique_ptr<UpgradeChild> inherited_;
  bool handed_over_ = false;
  SharedState shared_;
  std::shared_ptr<const Snapshot> snapshot_;  // of the effective configuration (file + overlay)
  std::shared_ptr<const config::Config> file_config_;  // as the file says it, at the last (re)load
  config::Overlay overlay_;  // resolved names and admin changes, until the next reload
  std::unique_ptr<Discovery> discovery_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::unique_ptr<admin::AdminServer> admin_;
  std::unique_ptr<health::Checker> checker_;  // from run() until shutdown begins
  // With [session_store]: this instance's share of the fleet's counts (main loop).
  BufferPool fleet_buffers_{2};
  tls::Counters fleet_tls_counters_;
  std::unique_ptr<store::FleetCounts> fleet_;
  std::shared_ptr<const store::StoreSetup> running_store_;  // the one read at start (restart to change)
  void share_backends_with_fleet();
  std::string admin_address_;  // address the admin listener is bound to ("" = none)
  uint64_t started_ms_ = 0;
  uint64_t fd_limit_ = 0;  // RLIMIT_NOFILE after raising it, at start
  std::atomic<int> workers_running_{0};
  uint64_t generation_ = 0;
  bool shutting_down_ = false;
  std::atomic<uint64_t> reloads_ok_{0};
  std::atomic<uint64_t> reloads_failed_{0};
  // Backends removed by a reload (by BackendState id) and when their tunnels must close.
  struct PendingDrain {
    uint64_t due_ms;
    std::vector<uint32_t> backend_ids;
  };
  std::set<uint32_t> removed_backends_;
  std::set<uint32_t> admin_drained_;  // drained through the admin API until enabled again
  std::vector<PendingDrain> pending_drains_;
  int exit_code_ = 0;
};

}  // namespace limpet::runtime
