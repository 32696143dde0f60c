// A worker thread: its own uv loop, its own SO_REUSEPORT listening socket per listener, and every
// connection accepted on them (connections never leave their worker). The main thread talks to
// it only through publish() and stop(), which wake the loop with uv_async_send.
#pragma once

#include <uv.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "limpet/proxy/context.hpp"
#include "limpet/runtime/snapshot.hpp"

namespace limpet::runtime {

// Listening sockets opened by the main thread (so bind errors are reported before anything
// runs), one per worker per listener address; after a binary upgrade a worker may get several
// for one address (the old process had more workers: every inherited socket keeps being served,
// closing one would reset the connections in its accept queue).
struct ListenSocket {
  std::string address;  // listener address text: the identity kept across reloads
  int fd = -1;
};

class Worker {
 public:
  Worker(int index, std::function<void()> on_exit);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Before start(): this worker opens its own connection to the session store.
  void use_session_store(std::shared_ptr<const store::StoreSetup> setup, store::StoreStats* stats);
  // Starts the thread serving `snapshot` on `sockets` (ownership of the fds passes to it).
  void start(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> sockets);
  // Main thread: a new snapshot and the sockets of listeners that are new in it.
  void publish(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> new_sockets);
  // Main thread: close the tunnels to these backends cleanly (1012), spread over close_spread.
  void drain_backends(std::vector<uint32_t> backend_ids);
  // Main thread, binary upgrade: the new process serves the listening sockets now. Stop accepting
  // (the sockets live on in the new process, so nothing queued is lost), answer every next
  // request with Connection: close, close tunnels with 1001 spread over `spread_ms`.
  // `done` runs on the worker's thread once it accepts no more.
  void hand_over(uint64_t spread_ms, std::function<void()> done);
  // Main thread, once: stop accepting, then let the thread end once its connections are gone.
  // Graceful: in-flight requests finish, tunnels close (1001) spread over close_spread. Fast:
  // tunnels close at once (the process does not wait for requests in flight).
  enum class StopKind { kGraceful, kFast };
  void stop(StopKind kind = StopKind::kGraceful);
  void join();

  const proxy::WorkerCounters& counters() const { return context_.counters; }

 private:
  struct Listener {
    Worker* worker = nullptr;
    uv_tcp_t handle{};
    std::shared_ptr<uint32_t> open_connections = std::make_shared<uint32_t>(0);
    std::shared_ptr<proxy::ListenerContext> context;
    bool closing = false;
    bool paused = false;  // holds one connection unaccepted: the fd budget is full
  };

  static void on_async_cb(uv_async_t* handle);
  static void on_idle_sweep_cb(uv_timer_t* handle);
  static void on_connection_cb(uv_stream_t* server, int status);
  static void on_resume_timer_cb(uv_timer_t* handle);
  static void on_listener_closed_cb(uv_handle_t* handle);
  void run();
  void on_async();
  void apply(std::shared_ptr<const Snapshot> snapshot, std::vector<ListenSocket> sockets);
  void open_listener(const ListenSocket& socket);
  void close_listener(Listener* listener);
  void begin_shutdown(StopKind kind);
  void begin_hand_over(uint64_t spread_ms, const std::function<void()>& done);
  void close_listeners();
  void on_connection(Listener* listener, int status);
  void accept(Listener* listener);
  void pause(Listener* listener);
  void resume_paused();
  void note_accept_error(int status);

  int index_;
  std::function<void()> on_exit_;
  std::thread thread_;
  uv_loop_t loop_{};
  uv_async_t async_{};
  uv_timer_t idle_sweep_{};
  uv_timer_t resume_timer_{};  // runs while a listener is paused (fd budget full)
  uint64_t accept_errors_ = 0;           // since the last line about them
  std::optional<uint64_t> accept_errors_logged_ms_;  // idle tunnels hold no timer of their own: this looks at them
  proxy::WorkerContext context_;
  std::unique_ptr<store::SessionStore> sessions_;  // context_.sessions
  std::multimap<std::string, std::unique_ptr<Listener>> listeners_;  // by address text
  std::shared_ptr<const Snapshot> snapshot_;

  // Mailbox from the main thread.
  std::mutex mailbox_mu_;
  std::shared_ptr<const Snapshot> pending_snapshot_;
  std::vector<ListenSocket> pending_sockets_;
  std::vector<uint32_t> pending_drains_;
  bool stop_requested_ = false;
  StopKind stop_kind_ = StopKind::kGraceful;
  bool hand_over_requested_ = false;
  uint64_t hand_over_spread_ms_ = 0;
  std::function<void()> hand_over_done_;
  bool handed_over_ = false;
  bool stopping_ = false;
};

}  // namespace limpet::runtime
