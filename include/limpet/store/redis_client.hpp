// One connection to a Redis server from one loop, over limpet's own net::Stream (TLS through the
// tls layer's client filter). Commands are pipelined: each is written at once and its callback
// waits in a FIFO, since Redis answers in order. It connects, authenticates (AUTH [user] pass),
// selects the database, and only then takes commands; while it is not ready send() refuses at
// once, so that callers fall back to what they know locally instead of waiting. A dead
// connection (refused, reset, a protocol error, or a reply overdue by connect_timeout) fails
// every waiting command and reconnects with exponential backoff (100 ms doubling to 5 s).
// Its handles are unreferenced: a loop with nothing else to do ends (then stop() the client).
// Owning loop only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <queue>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/store/resp.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/util/buffer_pool.hpp"

namespace limpet::store {

struct RedisSettings {
  net::SocketAddress address;
  config::Address address_config;  // for logs and the TLS filter's name
  std::string username;  // empty: AUTH <password> (requirepass)
  std::string password;  // empty: no AUTH
  uint32_t database = 0;
  uint64_t connect_timeout_ms = 1000;
  const tls::ClientContext* tls = nullptr;  // null: plain TCP
  size_t max_in_flight = 4096;              // beyond: send() refuses (Redis is not keeping up)
};

class RedisClient : private net::StreamDelegate {
 public:
  using Callback = std::function<void(const Reply&)>;
  // Told on every transition: ready (true) or down (false, with the reason).
  using StateHandler = std::function<void(bool up, const std::string& why)>;

  RedisClient(uv_loop_t* loop, BufferPool* buffers, RedisSettings settings, tls::Counters* tls_counters,
              StateHandler on_state);
  ~RedisClient() override;
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  void start();
  // Closes the connection and the timer; waiting callbacks hear kDisconnected. Must be called
  // (and the loop run once more) before the loop is closed.
  void stop();

  bool ready() const { return state_ == State::kReady; }
  // Queues `argv` (copied). `on_reply` (may be empty: fire and forget) runs once: with the
  // reply, with kTimeout after `timeout_ms` (0: no own timeout), or with kDisconnected. Returns a
  // ticket, or 0 when not ready or too much is in flight (then `on_reply` never runs).
  uint64_t send(std::span<const std::string_view> argv, uint64_t timeout_ms, Callback on_reply);
  // The caller is gone: its callback will not run (the reply is read and dropped).
  void cancel(uint64_t ticket);
  size_t in_flight() const { return in_flight_.size(); }

 private:
  enum class State : uint8_t { kIdle, kConnecting, kHandshake, kReady, kBackoff, kStopped };
  struct Waiting {
    uint64_t ticket;
    uint64_t sent_ms;
    Callback on_reply;
  };
  struct Expiry {
    uint64_t due_ms;
    uint64_t ticket;
    bool operator>(const Expiry& o) const { return due_ms > o.due_ms; }
  };

  void connect();
  void on_connected(int status);
  void handshake();
  uint64_t queue(std::span<const std::string_view> argv, uint64_t timeout_ms, Callback on_reply);
  void fail_connection(const std::string& why);
  void report(bool up, const std::string& why);
  Waiting* find(uint64_t ticket);
  void expire_due(uint64_t now);
  void arm_timer();
  void on_timer();
  static void on_timer_cb(uv_timer_t* t);

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream*) override {}
  void on_closed(net::Stream*) override {}
  void on_timeout(net::Stream*) override {}

  uv_loop_t* loop_;
  BufferPool* buffers_;
  RedisSettings settings_;
  tls::Counters* tls_counters_;
  StateHandler on_state_;
  uv_timer_t* timer_ = nullptr;  // heap: freed by its close callback
  net::Stream* stream_ = nullptr;
  std::unique_ptr<ReplyReader> reader_;  // one per connection (a protocol error poisons it)
  std::deque<Waiting> in_flight_;  // tickets ascending: in_flight_[t - front().ticket]
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<>> expiries_;
  std::string command_;  // scratch for formatting
  uint64_t next_ticket_ = 1;
  uint64_t connect_due_ms_ = 0;
  uint64_t backoff_ms_ = 0;
  uint64_t retry_at_ms_ = 0;
  State state_ = State::kIdle;
  bool reported_ = false;     // on_state_ was called at least once
  bool reported_up_ = false;  // and what it was told last
};

}  // namespace limpet::store
