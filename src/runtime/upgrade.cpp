#include "limpet/runtime/upgrade.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "limpet/util/log.hpp"

extern char** environ;

namespace limpet::runtime {
namespace {

constexpr const char* kDeletedSuffix = " (deleted)";

template <typename H>
void close_and_free(H*& handle) {
  if (handle == nullptr) return;
  handle->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(handle), [](uv_handle_t* h) { delete reinterpret_cast<H*>(h); });
  handle = nullptr;
}

}  // namespace

std::string current_executable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t suffix = std::strlen(kDeletedSuffix);
  if (path.size() > suffix && path.compare(path.size() - suffix, suffix, kDeletedSuffix) == 0) {
    path.resize(path.size() - suffix);
  }
  return path;
}

// ---------------------------------------------------------------------------------------------
// The old process

UpgradeParent::UpgradeParent(uv_loop_t* loop, handover::LearnJournal* journal, Hooks hooks)
    : loop_(loop), journal_(journal), hooks_(std::move(hooks)) {}

UpgradeParent::~UpgradeParent() { close(); }

Status UpgradeParent::start(const Launch& launch, const std::vector<handover::HandedSocket>& sockets,
                            const std::function<std::string()>& export_affinity, uint64_t ready_timeout_ms) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::fail(std::string("socketpair: ") + std::strerror(errno));
  }
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (std::strncmp(*e, handover::kFdEnvironment, std::strlen(handover::kFdEnvironment)) != 0) env_strings.push_back(*e);
  }
  env_strings.push_back(std::string(handover::kFdEnvironment) + "=" + std::to_string(handover::kChildFd));
  std::vector<char*> env, args;
  for (auto& s : env_strings) env.push_back(s.data());
  env.push_back(nullptr);
  std::vector<std::string> argv = launch.argv;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);

  uv_stdio_container_t stdio[4];
  for (int i = 0; i < 3; ++i) {
    stdio[i].flags = UV_INHERIT_FD;
    stdio[i].data.fd = i;
  }
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = sv[1];
  uv_process_options_t options{};
  options.file = launch.exe.c_str();
  options.args = args.data();
  options.env = env.data();
  options.stdio_count = 4;
  options.stdio = stdio;
  options.exit_cb = on_exit_cb;
  process_ = new uv_process_t;
  process_->data = this;
  const int rc = uv_spawn(loop_, process_, &options);
  ::close(sv[1]);
  if (rc != 0) {
    ::close(sv[0]);
    close_and_free(process_);
    return Status::fail("cannot start " + launch.exe + ": " + uv_strerror(rc));
  }
  child_ = process_->pid;
  channel_ = std::make_unique<handover::Channel>(sv[0]);
  state_ = State::kWaiting;

  std::vector<int> fds;
  for (const auto& s : sockets) fds.push_back(s.fd);
  wake_ = new uv_async_t;
  uv_async_init(loop_, wake_, on_wake_cb);
  wake_->data = this;
  journal_->start([async = wake_] { uv_async_send(async); });
  Status st = channel_->send(handover::Type::kHello,
                             std::to_string(handover::kProtocolVersion) + " " + std::to_string(::getpid()));
  if (st) st = channel_->send(handover::Type::kSockets, handover::encode_socket_list(sockets), fds);
  if (st) st = channel_->send(handover::Type::kAffinity, export_affinity());
  if (st) st = channel_->send(handover::Type::kEnd, "");
  if (!st) {
    fail(st.message());  // no hook: the caller reports it
    return st;
  }
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  timer_->data = this;
  uv_timer_start(timer_, on_timeout_cb, ready_timeout_ms, 0);
  watcher_ = std::make_unique<handover::ChannelWatcher>(
      loop_, channel_.get(), [this](handover::Message& m) { on_message(m); },
      [this](const std::string& why) { on_channel_closed(why); });
  return Status::ok();
}

void UpgradeParent::on_message(handover::Message& m) {
  if (state_ != State::kWaiting) return;
  if (m.type == handover::Type::kReady) {
    state_ = State::kHandedOver;
    close_and_free(timer_);
    hooks_.ready(child_);
  } else if (m.type == handover::Type::kFailed) {
    fail("the new process (pid " + std::to_string(child_) + ") failed to start: " + m.payload);
    hooks_.failed(m.payload);
  }
}

void UpgradeParent::release() {
  if (!channel_) return;
  Status st = channel_->send(handover::Type::kReleased, "", {}, 1000);
  if (!st) LOG_WARN("upgrade: telling the new process to accept: %s", st.message().c_str());
}

void UpgradeParent::on_channel_closed(const std::string& why) {
  if (state_ == State::kWaiting) {
    fail("the new process (pid " + std::to_string(child_) + ") closed the hand-over channel: " + why);
    hooks_.failed(why);
  } else {
    stop_channel();  // handed over: the new process went away; nothing to forward to
  }
}

void UpgradeParent::on_exit_cb(uv_process_t* handle, int64_t status, int signal) {
  if (auto* self = static_cast<UpgradeParent*>(handle->data)) self->on_exit(status, signal);
}

void UpgradeParent::on_exit(int64_t status, int signal) {
  close_and_free(process_);  // reaped
  const std::string how = signal != 0 ? "was killed by signal " + std::to_string(signal)
                                      : "exited with status " + std::to_string(status);
  if (state_ == State::kWaiting) {
    const std::string why = "the new process (pid " + std::to_string(child_) + ") " + how + " before it was ready";
    fail(why);
    hooks_.failed(why);
  } else if (state_ == State::kHandedOver) {
    LOG_WARN("upgrade: the new process (pid %d) %s", static_cast<int>(child_), how.c_str());
    stop_channel();
  }
}

void UpgradeParent::on_timeout_cb(uv_timer_t* handle) {
  auto* self = static_cast<UpgradeParent*>(handle->data);
  if (self == nullptr || self->state_ != State::kWaiting) return;
  const std::string why = "the new process (pid " + std::to_string(self->child_) + ") did not report ready in time";
  self->fail(why);
  self->hooks_.failed(why);
}

void UpgradeParent::fail(const std::string& why) {
  LOG_ERROR("upgrade failed, this process (pid %d) keeps serving: %s", static_cast<int>(::getpid()), why.c_str());
  state_ = State::kFailed;
  stop_channel();
  close_and_free(timer_);
  // Whatever state it is in, it must not serve beside us; its exit is reaped by on_exit.
  if (process_ != nullptr) uv_process_kill(process_, SIGKILL);
}

void UpgradeParent::stop_channel() {
  journal_->stop();  // no worker wakes wake_ after this returns
  close_and_free(wake_);
  if (watcher_) watcher_->close();
  watcher_.reset();
  channel_.reset();
}

void UpgradeParent::on_wake_cb(uv_async_t* handle) {
  if (auto* self = static_cast<UpgradeParent*>(handle->data)) self->forward_journal();
}

// Sessions learned since the table was sent (also while waiting: they queue in the socket).
void UpgradeParent::forward_journal() {
  auto records = journal_->take();
  if (records.empty() || !channel_) return;
  Status st = channel_->send(handover::Type::kJournal, balancer::affinity_transfer::encode_records(records), {}, 1000);
  if (!st) {
    LOG_WARN("upgrade: %zu sessions learned while handing over were not forwarded: %s", records.size(),
             st.message().c_str());
    stop_channel();
  }
}

void UpgradeParent::close() {
  stop_channel();
  close_and_free(timer_);
  close_and_free(process_);
}

// ---------------------------------------------------------------------------------------------
// The new process

Result<std::unique_ptr<UpgradeChild>> UpgradeChild::from_environment(int timeout_ms) {
  using R = Result<std::unique_ptr<UpgradeChild>>;
  const char* value = std::getenv(handover::kFdEnvironment);
  if (value == nullptr) return std::unique_ptr<UpgradeChild>();
  const int fd = std::atoi(value);
  ::unsetenv(handover::kFdEnvironment);  // a later upgrade from this process sets its own
  if (fd < 3) return R::fail(std::string(handover::kFdEnvironment) + "=" + value + " is not a descriptor");
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  std::unique_ptr<UpgradeChild> child(new UpgradeChild(fd));
  Status st = child->receive_state(timeout_ms);
  if (!st) {
    child->report_failed(st.message());
    return R::fail(st.message());
  }
  return child;
}

Status UpgradeChild::receive_state(int timeout_ms) {
  for (bool hello = false;;) {
    auto m = channel_->receive(timeout_ms);
    if (!m) return Status::fail(m.message());
    switch (m->type) {
      case handover::Type::kHello: {
        const uint32_t version = static_cast<uint32_t>(std::strtoul(m->payload.c_str(), nullptr, 10));
        if (version != handover::kProtocolVersion) {
          return Status::fail("hand-over protocol " + std::to_string(version) + " from the old process, this limpet speaks " +
                              std::to_string(handover::kProtocolVersion));
        }
        const size_t space = m->payload.find(' ');
        parent_ = space == std::string::npos ? 0 : static_cast<pid_t>(std::atoi(m->payload.c_str() + space + 1));
        hello = true;
        break;
      }
      case handover::Type::kSockets: {
        auto list = handover::decode_socket_list(m->payload, *channel_);
        if (!list) return Status::fail(list.message());
        for (auto& s : *list) sockets_.push_back(std::move(s));
        break;
      }
      case handover::Type::kAffinity:
        affinity_ = std::move(m->payload);
        break;
      case handover::Type::kEnd:
        if (!hello) return Status::fail("hand-over: no hello from the old process");
        return Status::ok();
      default:
        return Status::fail("hand-over: unexpected message " + std::to_string(static_cast<uint32_t>(m->type)));
    }
  }
}

UpgradeChild::~UpgradeChild() { close_unclaimed(); }

std::vector<int> UpgradeChild::take(const std::string& kind, const std::string& address) {
  std::vector<int> fds;
  for (auto& s : sockets_) {
    if (s.fd >= 0 && s.kind == kind && s.address == address) {
      fds.push_back(s.fd);
      s.fd = -1;
    }
  }
  return fds;
}

void UpgradeChild::close_unclaimed() {
  for (auto& s : sockets_) {
    if (s.fd < 0) continue;
    LOG_INFO("upgrade: %s %s is not in the configuration any more: closed", s.kind.c_str(), s.address.c_str());
    ::close(s.fd);
    s.fd = -1;
  }
}

void UpgradeChild::report_ready() {
  reported_ = true;
  Status st = channel_->send(handover::Type::kReady, std::to_string(::getpid()));
  if (!st) LOG_WARN("upgrade: telling the old process we are ready: %s", st.message().c_str());
}

void UpgradeChild::report_failed(const std::string& why) {
  if (reported_ || !channel_) return;
  reported_ = true;
  (void)channel_->send(handover::Type::kFailed, why, {}, 1000);
}

bool UpgradeChild::wait_released(int timeout_ms, const std::function<void(std::string_view)>& on_blob) {
  for (;;) {
    auto m = channel_->receive(timeout_ms);
    if (!m) return channel_->peer_closed();  // the old process is gone: the sockets are ours alone
    if (m->type == handover::Type::kReleased) return true;
    if (m->type == handover::Type::kJournal) on_blob(m->payload);
  }
}

void UpgradeChild::watch_journal(uv_loop_t* loop, std::function<void(std::string_view)> on_blob) {
  auto deliver = [on_blob = std::move(on_blob)](handover::Message& m) {
    if (m.type == handover::Type::kJournal) on_blob(m.payload);
  };
  // wait_released() may have read journal blobs together with kReleased: they are only in the
  // channel's buffer now, and the watcher's poll would never report them.
  for (auto& m : channel_->take_buffered()) deliver(m);
  watcher_ = std::make_unique<handover::ChannelWatcher>(
      loop, channel_.get(), std::move(deliver),
      [this](const std::string&) {
        LOG_INFO("upgrade: the old process (pid %d) is gone: hand-over complete", static_cast<int>(parent_));
      });
}

void UpgradeChild::close() {
  if (watcher_) watcher_->close();
  watcher_.reset();
  channel_.reset();
}

}  // namespace limpet::runtime
