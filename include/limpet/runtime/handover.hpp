// The binary upgrade's hand-over channel: one AF_UNIX stream socket between the old and the new
// process (a socketpair; the new process gets its end as an inherited fd named by
// LIMPET_UPGRADE_FD). Messages are framed, listening sockets ride along as SCM_RIGHTS.
// Also the journal of sessions the old process learns while it drains. Main thread, except
// LearnJournal::on_learn (any worker).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/affinity_transfer.hpp"
#include "limpet/balancer/backend.hpp"
#include "limpet/util/result.hpp"

namespace limpet::runtime::handover {

// Bumped on any incompatible change to the messages below; the new process refuses another.
constexpr uint32_t kProtocolVersion = 1;
constexpr const char* kFdEnvironment = "LIMPET_UPGRADE_FD";
constexpr int kChildFd = 3;  // where the new process finds its end

// Old → new: kHello "<version> <pid>", kSockets (one line per fd, see HandedSocket), kAffinity (an
// affinity_transfer blob), kEnd; kReleased once the old process stopped accepting; kJournal
// blobs from the start until the old process exits.
// New → old: kReady "<pid>" once it could serve (config, snapshot, sockets), or kFailed "<why>".
// Only one of the two accepts at any time: sessions learned by the new process are unknown to
// the old, so the new one starts accepting at kReleased (connections wait in the shared backlog
// meanwhile; none is refused).
enum class Type : uint32_t { kHello = 1, kSockets, kAffinity, kEnd, kReady, kFailed, kJournal, kReleased };

struct Message {
  Type type{};
  std::string payload;
};

// Framing: u32 type, u32 payload length (little-endian), payload. Fds travel with a message's
// first bytes, but one read may return the end of the message before it too, so they are not
// tied to byte positions: they queue in arrival order, and a message that says it carries N
// (kSockets: one line per fd) takes N, all there by the time its last byte is.
class Channel {
 public:
  explicit Channel(int fd) : fd_(fd) {}  // takes ownership
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  int fd() const { return fd_; }
  // The whole message, waiting while the socket is full, at most `timeout_ms` in all.
  Status send(Type type, std::string_view payload, const std::vector<int>& fds = {}, int timeout_ms = 10000);
  // What the socket holds now, without waiting; complete messages are appended to `out`. False
  // once the peer closed or on an error (`error` says which).
  bool read_available(std::vector<Message>* out, std::string* error);
  // Waits for the next message, at most `timeout_ms`.
  Result<Message> receive(int timeout_ms);
  // Messages a receive() read along with the one it returned and still holds (one read can
  // bring several); they are no longer on the socket, so a poll on it will not announce them.
  std::vector<Message> take_buffered();
  // The other process closed its end (as opposed to a timeout).
  bool peer_closed() const { return peer_closed_; }
  // The first `n` descriptors received and not yet taken (fewer if fewer came); caller owns them.
  std::vector<int> take_fds(size_t n);

 private:
  void extract(std::vector<Message>* out);
  int fd_;
  std::string in_;
  std::vector<int> fds_in_;  // received, not yet given to a message
  std::vector<Message> ready_;
  bool peer_closed_ = false;
};

// Watches a channel on a uv loop and hands each message over; `on_closed` once at EOF/error.
class ChannelWatcher {
 public:
  ChannelWatcher(uv_loop_t* loop, Channel* channel, std::function<void(Message&)> on_message,
                 std::function<void(const std::string&)> on_closed);
  ~ChannelWatcher();  // must be close()d first, and the loop run until its callback
  void close();

 private:
  static void on_poll_cb(uv_poll_t* handle, int status, int events);
  void on_readable();
  uv_poll_t* poll_;  // freed in its close callback
  Channel* channel_;
  std::function<void(Message&)> on_message_;
  std::function<void(const std::string&)> on_closed_;
  bool closed_ = false;
  // False once destroyed: a message handler may destroy the watcher (and the channel) it runs in.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

// The kSockets payload: what each passed fd is ("listener ADDRESS" or "admin ADDRESS").
struct HandedSocket {
  std::string kind;
  std::string address;
  int fd = -1;
};
std::string encode_socket_list(const std::vector<HandedSocket>& sockets);
// Takes the message's descriptors from `channel`.
Result<std::vector<HandedSocket>> decode_socket_list(std::string_view payload, Channel& channel);
// True when `fd` is a listening TCP socket (checked before it is passed on: a stale number
// would hand the new process someone else's descriptor).
bool is_listening_socket(int fd);

// Sessions learned while the old process drains, forwarded in batches (one kJournal blob per
// wake-up of the main loop).
class LearnJournal final : public balancer::AffinityTable::LearnObserver {
 public:
  explicit LearnJournal(const balancer::BackendRegistry& registry) : registry_(registry) {}
  // `wake` runs on the learning worker's thread (uv_async_send of the main loop).
  void start(std::function<void()> wake);
  void stop();
  std::vector<balancer::affinity_transfer::Record> take();
  void on_learn(std::string_view sid, uint32_t backend_id, balancer::AffinityTable::Millis ttl,
                balancer::AffinityTable::Origin origin) override;

 private:
  const balancer::BackendRegistry& registry_;
  std::mutex mu_;
  std::function<void()> wake_;  // empty = stopped
  std::vector<balancer::affinity_transfer::Record> records_;
};

}  // namespace limpet::runtime::handover
