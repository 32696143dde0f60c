// Binary upgrade (`limpet -s upgrade`, SIGUSR2), both sides of the hand-over channel.
// UpgradeParent, in the running process: starts the new binary with the same command line and
// the channel as fd 3, sends it the listening sockets and the affinity table, waits for it to
// report ready (or to fail, exit or time out: then this process keeps serving), then forwards the
// sessions it still learns while it drains. UpgradeChild, in the new process: receives that state
// before anything is bound, reports ready or why not, imports the journal. Main thread.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "limpet/runtime/handover.hpp"
#include "limpet/util/result.hpp"

namespace limpet::runtime {

// What an upgrade starts: this binary's path as of the upgrade (the package manager may have
// replaced the file: that is the point) and the command line this process was started with.
struct Launch {
  std::string exe;
  std::vector<std::string> argv;
};
// /proc/self/exe, without the " (deleted)" the kernel appends once the file was replaced.
std::string current_executable();

class UpgradeParent {
 public:
  struct Hooks {
    std::function<void(pid_t)> ready;                 // the new process serves: hand over now
    std::function<void(const std::string&)> failed;   // it does not: this process keeps serving
  };
  UpgradeParent(uv_loop_t* loop, handover::LearnJournal* journal, Hooks hooks);
  ~UpgradeParent();  // close() first, then run the loop so the handles' callbacks free them
  UpgradeParent(const UpgradeParent&) = delete;
  UpgradeParent& operator=(const UpgradeParent&) = delete;

  // Spawns the new process and sends it `sockets` and the affinity table (`export_affinity`
  // runs after the journal started, so no session learned meanwhile is missed). Blocks the
  // main loop while the new process reads (it does so first thing), at most the channel's
  // timeout. A failure here leaves nothing running and calls no hook.
  Status start(const Launch& launch, const std::vector<handover::HandedSocket>& sockets,
               const std::function<std::string()>& export_affinity, uint64_t ready_timeout_ms);
  // Waiting for the new process, or handed over: another upgrade must wait.
  bool busy() const { return state_ == State::kWaiting || state_ == State::kHandedOver || process_ != nullptr; }
  bool handed_over() const { return state_ == State::kHandedOver; }
  // After the ready hook: this process accepts no more, the new one may start.
  void release();
  // Before the new process reported ready: kill it (this process keeps the sockets).
  void abandon(const std::string& why) { fail(why); }
  // Closes every handle; a new process that runs keeps running.
  void close();

 private:
  enum class State { kIdle, kWaiting, kHandedOver, kFailed };
  static void on_exit_cb(uv_process_t* handle, int64_t status, int signal);
  static void on_timeout_cb(uv_timer_t* handle);
  static void on_wake_cb(uv_async_t* handle);
  void on_message(handover::Message& m);
  void on_channel_closed(const std::string& why);
  void on_exit(int64_t status, int signal);
  void fail(const std::string& why);
  void forward_journal();
  void stop_channel();

  uv_loop_t* loop_;
  handover::LearnJournal* journal_;
  Hooks hooks_;
  State state_ = State::kIdle;
  pid_t child_ = 0;
  uv_process_t* process_ = nullptr;  // until the child exited (reaped) or close()
  uv_timer_t* timer_ = nullptr;
  uv_async_t* wake_ = nullptr;
  std::unique_ptr<handover::Channel> channel_;
  std::unique_ptr<handover::ChannelWatcher> watcher_;
};

class UpgradeChild {
 public:
  // From $LIMPET_UPGRADE_FD (unset afterwards): null when this process was not started by an
  // upgrade; a failure when it was and the hand-over is broken.
  static Result<std::unique_ptr<UpgradeChild>> from_environment(int timeout_ms);
  ~UpgradeChild();

  pid_t parent() const { return parent_; }
  // The passed sockets of `kind` ("listener", "admin") on `address`; the caller owns them.
  std::vector<int> take(const std::string& kind, const std::string& address);
  // Sockets for addresses the new configuration no longer has.
  void close_unclaimed();
  const std::string& affinity() const { return affinity_; }
  void drop_affinity() { std::string().swap(affinity_); }
  void report_ready();
  void report_failed(const std::string& why);
  // After report_ready(): until the old process stopped accepting (kReleased, or it is gone), at
  // most `timeout_ms`; journal blobs that come first go to `on_blob`. False on a timeout.
  bool wait_released(int timeout_ms, const std::function<void(std::string_view blob)>& on_blob);
  // After report_ready(): every kJournal blob until the old process exits.
  void watch_journal(uv_loop_t* loop, std::function<void(std::string_view blob)> on_blob);
  void close();  // before the loop's last run

 private:
  explicit UpgradeChild(int fd) : channel_(std::make_unique<handover::Channel>(fd)) {}
  Status receive_state(int timeout_ms);

  std::unique_ptr<handover::Channel> channel_;
  std::unique_ptr<handover::ChannelWatcher> watcher_;
  pid_t parent_ = 0;
  std::vector<handover::HandedSocket> sockets_;
  std::string affinity_;
  bool reported_ = false;
};

}  // namespace limpet::runtime
