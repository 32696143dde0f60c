#include "limpet/store/redis_client.hpp"

#include <algorithm>
#include <array>

#include "limpet/util/log.hpp"

namespace limpet::store {
namespace {

constexpr uint64_t kFirstBackoffMs = 100;
constexpr uint64_t kMaxBackoffMs = 5000;

Reply synthetic(Reply::Type type, std::string why) {
  Reply r;
  r.type = type;
  r.str = std::move(why);
  return r;
}

}  // namespace

RedisClient::RedisClient(uv_loop_t* loop, BufferPool* buffers, RedisSettings settings,
                         tls::Counters* tls_counters, StateHandler on_state)
    : loop_(loop),
      buffers_(buffers),
      settings_(std::move(settings)),
      tls_counters_(tls_counters),
      on_state_(std::move(on_state)) {}

RedisClient::~RedisClient() { stop(); }

void RedisClient::start() {
  if (state_ != State::kIdle) return;
  timer_ = new uv_timer_t;
  uv_timer_init(loop_, timer_);
  uv_unref(reinterpret_cast<uv_handle_t*>(timer_));  // a store connection never keeps a loop running
  timer_->data = this;
  connect();
}

void RedisClient::stop() {
  if (state_ == State::kStopped || state_ == State::kIdle) {
    state_ = State::kStopped;
    return;
  }
  state_ = State::kStopped;
  fail_connection("stopped");
  if (timer_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    timer_ = nullptr;
  }
}

void RedisClient::connect() {
  stream_ = new net::Stream(loop_, buffers_);
  uv_unref(reinterpret_cast<uv_handle_t*>(stream_->tcp()));
  stream_->set_delegate(this);
  if (settings_.tls != nullptr) {
    config::BackendConfig target;
    target.name = "session_store";
    target.address = settings_.address_config;
    stream_->set_filter(settings_.tls->new_filter(target, tls_counters_));
  }
  reader_ = std::make_unique<ReplyReader>();
  state_ = State::kConnecting;
  connect_due_ms_ = uv_now(loop_) + settings_.connect_timeout_ms;
  arm_timer();
  const int rc = stream_->connect(settings_.address.get(), [this](int status) { on_connected(status); });
  if (rc != 0) on_connected(rc);
}

void RedisClient::on_connected(int status) {
  if (state_ != State::kConnecting) return;
  if (status != 0) {
    fail_connection(std::string("connect: ") + uv_strerror(status));
    return;
  }
  stream_->set_nodelay();
  stream_->start_reading();
  handshake();
}

// AUTH and SELECT pipelined ahead of everything else; ready once the last of them is answered.
// The handshake's replies may take until connect_timeout (the TLS handshake runs before them).
void RedisClient::handshake() {
  state_ = State::kHandshake;
  auto check = [this](const char* what) {
    return [this, what](const Reply& r) {
      if (r.type == Reply::Type::kError) fail_connection(std::string(what) + ": " + r.str);
    };
  };
  if (!settings_.password.empty()) {
    if (settings_.username.empty()) {
      std::array<std::string_view, 2> argv{"AUTH", settings_.password};
      queue(argv, 0, check("AUTH"));
    } else {
      std::array<std::string_view, 3> argv{"AUTH", settings_.username, settings_.password};
      queue(argv, 0, check("AUTH"));
    }
  }
  const std::string db = std::to_string(settings_.database);
  std::array<std::string_view, 2> select{"SELECT", db};
  queue(select, 0, [this](const Reply& r) {
    if (r.type == Reply::Type::kError) {
      fail_connection("SELECT: " + r.str);
    } else if (state_ == State::kHandshake) {
      backoff_ms_ = 0;
      state_ = State::kReady;
      report(true, "");
      arm_timer();
    }
  });
}

uint64_t RedisClient::send(std::span<const std::string_view> argv, uint64_t timeout_ms, Callback on_reply) {
  if (state_ != State::kReady || in_flight_.size() >= settings_.max_in_flight) return 0;
  return queue(argv, timeout_ms, std::move(on_reply));
}

uint64_t RedisClient::queue(std::span<const std::string_view> argv, uint64_t timeout_ms, Callback on_reply) {
  command_.clear();
  append_command(command_, argv);
  stream_->write(command_);
  const uint64_t now = uv_now(loop_);
  const uint64_t ticket = next_ticket_++;
  const bool was_idle = in_flight_.empty();
  in_flight_.push_back({ticket, now, std::move(on_reply)});
  if (timeout_ms > 0 && in_flight_.back().on_reply) {
    const bool earliest = expiries_.empty() || now + timeout_ms < expiries_.top().due_ms;
    expiries_.push({now + timeout_ms, ticket});
    if (earliest) arm_timer();
  } else if (was_idle && state_ == State::kReady) {
    arm_timer();  // the stall deadline starts with the first command in flight
  }
  return ticket;
}

void RedisClient::cancel(uint64_t ticket) {
  if (Waiting* w = find(ticket)) w->on_reply = nullptr;
}

RedisClient::Waiting* RedisClient::find(uint64_t ticket) {
  if (in_flight_.empty() || ticket < in_flight_.front().ticket) return nullptr;
  const uint64_t i = ticket - in_flight_.front().ticket;
  return i < in_flight_.size() ? &in_flight_[i] : nullptr;
}

void RedisClient::on_data(net::Stream*, std::string_view data) {
  reader_->feed(data);
  Reply reply;
  while (reader_->next(reply)) {
    if (in_flight_.empty()) {
      fail_connection("a reply to no command");
      return;
    }
    Waiting w = std::move(in_flight_.front());
    in_flight_.pop_front();
    if (w.on_reply) w.on_reply(reply);
    if (stream_ == nullptr) return;  // the callback failed the connection
  }
  if (reader_->error()) {
    fail_connection("protocol error: " + reader_->error_reason());
    return;
  }
  arm_timer();
}

void RedisClient::on_end(net::Stream*, int status) {
  fail_connection(status == UV_EOF ? std::string("connection closed by the server")
                                   : std::string("read: ") + uv_strerror(status));
}

// Every waiting command fails, the stream goes, and a reconnect is scheduled (unless stopping).
void RedisClient::fail_connection(const std::string& why) {
  const bool stopping = state_ == State::kStopped;
  if (!stopping) state_ = State::kBackoff;  // send() refuses from here, in the callbacks below too
  if (stream_ != nullptr) {
    stream_->set_delegate(nullptr);
    stream_->close();
    stream_ = nullptr;
  }
  reader_.reset();
  std::deque<Waiting> waiting;
  waiting.swap(in_flight_);
  expiries_ = {};
  const Reply gone = synthetic(Reply::Type::kDisconnected, why);
  for (Waiting& w : waiting) {
    if (w.on_reply) w.on_reply(gone);
  }
  if (stopping) return;
  backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
  retry_at_ms_ = uv_now(loop_) + backoff_ms_;
  report(false, why);
  arm_timer();
}

void RedisClient::report(bool up, const std::string& why) {
  if (reported_ && reported_up_ == up) return;  // once per transition, not once per retry
  reported_ = true;
  reported_up_ = up;
  if (on_state_) on_state_(up, why);
}

// Timeouts of single commands: the caller hears kTimeout, the command stays in the FIFO (its
// reply, when it comes, is dropped).
void RedisClient::expire_due(uint64_t now) {
  while (!expiries_.empty() && expiries_.top().due_ms <= now) {
    const uint64_t ticket = expiries_.top().ticket;
    expiries_.pop();
    Waiting* w = find(ticket);
    if (w == nullptr || !w->on_reply) continue;
    Callback cb = std::move(w->on_reply);
    w->on_reply = nullptr;
    cb(synthetic(Reply::Type::kTimeout, "no reply within the timeout"));
    if (stream_ == nullptr) return;
  }
}

void RedisClient::arm_timer() {
  if (timer_ == nullptr) return;
  uint64_t due = 0;
  auto earliest = [&due](uint64_t t) { due = due == 0 ? t : std::min(due, t); };
  switch (state_) {
    case State::kConnecting:
    case State::kHandshake:
      earliest(connect_due_ms_);
      break;
    case State::kBackoff:
      earliest(retry_at_ms_);
      break;
    case State::kReady:
      // A reply overdue by connect_timeout: the server or the path is gone (no FIN seen).
      if (!in_flight_.empty()) earliest(in_flight_.front().sent_ms + settings_.connect_timeout_ms);
      break;
    default:
      return;
  }
  if (!expiries_.empty()) earliest(expiries_.top().due_ms);
  if (due == 0) {
    uv_timer_stop(timer_);
    return;
  }
  const uint64_t now = uv_now(loop_);
  uv_timer_start(timer_, on_timer_cb, due > now ? due - now : 0, 0);
}

void RedisClient::on_timer_cb(uv_timer_t* t) { static_cast<RedisClient*>(t->data)->on_timer(); }

void RedisClient::on_timer() {
  const uint64_t now = uv_now(loop_);
  expire_due(now);
  switch (state_) {
    case State::kConnecting:
    case State::kHandshake:
      if (now >= connect_due_ms_) {
        fail_connection("no connection within connect_timeout");
        return;
      }
      break;
    case State::kBackoff:
      if (now >= retry_at_ms_) {
        connect();
        return;
      }
      break;
    case State::kReady:
      if (!in_flight_.empty() && now >= in_flight_.front().sent_ms + settings_.connect_timeout_ms) {
        fail_connection("no reply within connect_timeout");
        return;
      }
      break;
    default:
      return;
  }
  arm_timer();
}

}  // namespace limpet::store
