#include "limpet/runtime/handover.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace limpet::runtime::handover {
namespace {

constexpr size_t kHeader = 8;
constexpr size_t kMaxFdsPerMessage = 250;  // the kernel's SCM_MAX_FD is 253
constexpr size_t kMaxPayload = size_t{1} << 31;

int64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

void put_u32(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint32_t get_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t{static_cast<unsigned char>(p[i])} << (8 * i);
  return v;
}

// Waits until `fd` is ready for `events` or the deadline passes.
bool wait_for(int fd, short events, int64_t deadline_ms) {
  for (;;) {
    const int64_t left = deadline_ms - now_ms();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    const int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) return false;
  }
}

}  // namespace

Channel::~Channel() {
  for (int fd : fds_in_) ::close(fd);
  if (fd_ >= 0) ::close(fd_);
}

Status Channel::send(Type type, std::string_view payload, const std::vector<int>& fds, int timeout_ms) {
  if (fds.size() > kMaxFdsPerMessage) return Status::fail("hand-over: too many descriptors in one message");
  std::string frame;
  frame.reserve(kHeader + payload.size());
  put_u32(frame, static_cast<uint32_t>(type));
  put_u32(frame, static_cast<uint32_t>(payload.size()));
  frame.append(payload);
  const int64_t deadline = now_ms() + timeout_ms;
  size_t sent = 0;
  while (sent < frame.size()) {
    iovec iov{frame.data() + sent, frame.size() - sent};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
    if (sent == 0 && !fds.empty()) {  // the fds ride with the message's first byte
      msg.msg_control = control;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    const ssize_t n = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_for(fd_, POLLOUT, deadline)) continue;
      return Status::fail("hand-over: the other process did not read within " + std::to_string(timeout_ms) + " ms");
    }
    return Status::fail(std::string("hand-over: send: ") + std::strerror(errno));
  }
  return Status::ok();
}

bool Channel::read_available(std::vector<Message>* out, std::string* error) {
  char buf[65536];
  for (;;) {
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 253)] = {};
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      *error = std::string("hand-over: receive: ") + std::strerror(errno);
      return false;
    }
    std::vector<int> arrived;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd = -1;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        arrived.push_back(fd);
      }
    }
    fds_in_.insert(fds_in_.end(), arrived.begin(), arrived.end());
    if (n == 0) {
      peer_closed_ = true;
      extract(out);
      *error = "hand-over: the other process closed the channel";
      return false;
    }
    in_.append(buf, static_cast<size_t>(n));
    extract(out);
  }
  return true;
}

void Channel::extract(std::vector<Message>* out) {
  for (;;) {
    if (in_.size() < kHeader) return;
    const uint32_t length = get_u32(in_.data() + 4);
    if (length > kMaxPayload || in_.size() < kHeader + length) return;
    Message m;
    m.type = static_cast<Type>(get_u32(in_.data()));
    m.payload = in_.substr(kHeader, length);
    in_.erase(0, kHeader + length);
    out->push_back(std::move(m));
  }
}

Result<Message> Channel::receive(int timeout_ms) {
  const int64_t deadline = now_ms() + timeout_ms;
  while (ready_.empty()) {
    std::string error;
    if (!read_available(&ready_, &error) && ready_.empty()) return Result<Message>::fail(error);
    if (!ready_.empty()) break;
    if (!wait_for(fd_, POLLIN, deadline)) {
      return Result<Message>::fail("hand-over: nothing from the other process within " +
                                   std::to_string(timeout_ms) + " ms");
    }
  }
  Message m = std::move(ready_.front());
  ready_.erase(ready_.begin());
  return m;
}

std::vector<Message> Channel::take_buffered() {
  std::vector<Message> out;
  out.swap(ready_);
  return out;
}

std::vector<int> Channel::take_fds(size_t n) {
  n = std::min(n, fds_in_.size());
  std::vector<int> out(fds_in_.begin(), fds_in_.begin() + static_cast<std::ptrdiff_t>(n));
  fds_in_.erase(fds_in_.begin(), fds_in_.begin() + static_cast<std::ptrdiff_t>(n));
  return out;
}

ChannelWatcher::ChannelWatcher(uv_loop_t* loop, Channel* channel, std::function<void(Message&)> on_message,
                               std::function<void(const std::string&)> on_closed)
    : poll_(new uv_poll_t), channel_(channel), on_message_(std::move(on_message)), on_closed_(std::move(on_closed)) {
  uv_poll_init(loop, poll_, channel->fd());
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE | UV_DISCONNECT, on_poll_cb);
}

ChannelWatcher::~ChannelWatcher() {
  *alive_ = false;
  close();
}

void ChannelWatcher::close() {
  if (closed_) return;
  closed_ = true;
  poll_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
}

void ChannelWatcher::on_poll_cb(uv_poll_t* handle, int status, int events) {
  (void)status;
  (void)events;
  if (auto* self = static_cast<ChannelWatcher*>(handle->data)) self->on_readable();
}

void ChannelWatcher::on_readable() {
  std::vector<Message> messages = channel_->take_buffered();
  std::string error;
  const bool open = channel_->read_available(&messages, &error);
  const std::shared_ptr<bool> alive = alive_;
  for (auto& m : messages) {
    on_message_(m);
    if (!*alive || closed_) return;
  }
  if (!open) {
    auto on_closed = on_closed_;  // a copy: the handler may destroy this watcher
    close();
    on_closed(error);
  }
}

std::string encode_socket_list(const std::vector<HandedSocket>& sockets) {
  std::string out;
  for (const auto& s : sockets) out += s.kind + " " + s.address + "\n";
  return out;
}

Result<std::vector<HandedSocket>> decode_socket_list(std::string_view payload, Channel& channel) {
  const size_t lines = static_cast<size_t>(std::count(payload.begin(), payload.end(), '\n'));
  const std::vector<int> fds = channel.take_fds(lines);
  auto fail = [&fds](const std::string& why) {
    for (int fd : fds) ::close(fd);
    return Result<std::vector<HandedSocket>>::fail(why);
  };
  std::vector<HandedSocket> out;
  size_t pos = 0;
  while (pos < payload.size()) {
    const size_t end = payload.find('\n', pos);
    if (end == std::string_view::npos) break;
    std::string_view line = payload.substr(pos, end - pos);
    pos = end + 1;
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || out.size() >= fds.size()) return fail("hand-over: malformed socket list");
    out.push_back({std::string(line.substr(0, space)), std::string(line.substr(space + 1)), fds[out.size()]});
  }
  if (out.size() != fds.size() || pos != payload.size()) {
    return fail("hand-over: " + std::to_string(fds.size()) + " descriptors for " + std::to_string(lines) + " sockets");
  }
  return out;
}

bool is_listening_socket(int fd) {
  int listening = 0, type = 0;
  socklen_t len = sizeof listening;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) != 0) return false;
  len = sizeof type;
  return ::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM && listening == 1;
}

void LearnJournal::start(std::function<void()> wake) {
  std::lock_guard lock(mu_);
  wake_ = std::move(wake);
  records_.clear();
}

void LearnJournal::stop() {
  std::lock_guard lock(mu_);
  wake_ = nullptr;
  records_.clear();
}

std::vector<balancer::affinity_transfer::Record> LearnJournal::take() {
  std::vector<balancer::affinity_transfer::Record> batch;
  std::lock_guard lock(mu_);
  batch.swap(records_);
  return batch;
}

void LearnJournal::on_learn(std::string_view sid, uint32_t backend_id, balancer::AffinityTable::Millis ttl,
                            balancer::AffinityTable::Origin origin) {
  const balancer::BackendState* state = registry_.find(backend_id);
  if (state == nullptr) return;
  std::lock_guard lock(mu_);
  if (!wake_) return;
  const bool was_empty = records_.empty();
  records_.push_back({std::string(sid), state->name, ttl, origin});
  if (was_empty) wake_();  // one wake-up per batch
}

}  // namespace limpet::runtime::handover
