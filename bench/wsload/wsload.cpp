// wsload: WebSocket and HTTP/1.1 load generator for bench/run.sh (issue 6). One thread, one libuv
// loop. Open-loop modes send on a fixed schedule and measure latency from the *scheduled* send
// time, so a proxy that stalls cannot hide the stall by slowing the client down (no coordinated
// omission). It has its own minimal frame and HTTP code, never limpet's: a bug shared with the
// proxy under test would cancel out.
//
//   wsload idle       --conns 9000 --connect-rate 3000 --hold 5 --ready-file F
//   wsload echo       --conns 1000 --msg-rate 10 --size 32 --duration 10 --warmup 2
//   wsload throughput --conns 100 --window 16 --size 64 --duration 5 --warmup 1
//   wsload churn      --conns 50 --duration 5 --warmup 1
//   wsload http       --conns 50 --rate 20000 --path / --duration 10 --warmup 2
//
// Prints one JSON object on stdout at the end; progress and errors go to stderr.
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "histogram.hpp"

namespace wsload {
namespace {

constexpr uint64_t kNsPerSec = 1'000'000'000;
constexpr uint64_t kNsPerMs = 1'000'000;
// RFC 6455 §1.3's sample key and its accept value: a fixed key keeps the client free of SHA-1.
constexpr std::string_view kWsKey = "dGhlIHNhbXBsZSBub25jZQ==";
constexpr std::string_view kWsAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
constexpr size_t kMaxHead = 16 * 1024;

enum class Mode { kIdle, kEcho, kThroughput, kChurn, kHttp };

struct Options {
  Mode mode = Mode::kEcho;
  std::string host = "127.0.0.1";
  int port = 0;
  std::string path = "/";
  int conns = 100;
  double connect_rate = 2000;   // new connections per second while opening
  int max_pending = 256;        // connections between connect() and 101 at once
  double msg_rate = 10;         // echo: messages per second per connection
  double rate = 1000;           // http: requests per second in total
  int window = 16;              // throughput: messages in flight per connection
  size_t size = 32;             // WebSocket message payload bytes
  double duration = 5;          // measured seconds
  double warmup = 1;            // seconds before the measurement starts (not counted)
  double hold = 5;              // idle: seconds to hold the tunnels open once all are up
  double grace = 2;             // seconds to wait for replies after the last send
  std::string ready_file;       // idle: written once all connections are up
};

uint64_t now_ns() { return uv_hrtime(); }

double to_us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

class Load;

// One client connection: WebSocket (upgrade, masked frames out, frame boundaries in) or plain
// HTTP/1.1 keep-alive (one request in flight, later ones queued with their scheduled time).
class Conn {
 public:
  enum class State { kIdle, kConnecting, kHandshake, kOpen, kClosing, kClosed };

  Conn(Load* load, size_t index) : load_(load), index_(index) {}
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  void connect();
  void send_message(uint64_t sched_ns);  // a WebSocket message or an HTTP request
  void send_close_frame();
  void close();

  State state() const { return state_; }
  size_t outstanding() const { return inflight_.size() + backlog_.size(); }
  size_t index() const { return index_; }
  uint64_t started_ns() const { return started_ns_; }
  uint64_t last_activity_ns() const { return last_activity_ns_; }

 private:
  static void on_connect_cb(uv_connect_t* req, int status);
  static void on_alloc_cb(uv_handle_t* handle, size_t suggested, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);
  static void on_write_cb(uv_write_t* req, int status);
  static void on_close_cb(uv_handle_t* handle);

  void on_connect(int status);
  void on_read(ssize_t nread, const uv_buf_t* buf);
  void on_write(int status);
  void on_close();

  void queue(std::string_view bytes) { out_.append(bytes); }
  void flush();
  void fail(const char* why);
  size_t handle_handshake(const char* data, size_t len);
  void handle_frames(const char* data, size_t len);
  void on_frame(uint8_t opcode, bool fin);
  void handle_http(const char* data, size_t len);
  bool parse_response_head();
  void on_response();
  void send_http_request(uint64_t sched_ns);

  Load* load_;
  size_t index_;
  State state_ = State::kIdle;
  uv_tcp_t tcp_{};
  uv_connect_t connect_req_{};
  uv_write_t write_req_{};
  bool write_pending_ = false;
  bool handle_open_ = false;
  std::string out_;      // bytes not yet handed to the kernel
  std::string writing_;  // bytes of the uv_write in flight
  std::string head_;     // a response head being assembled
  uint64_t started_ns_ = 0;
  uint64_t last_activity_ns_ = 0;
  bool got_close_frame_ = false;

  // In-flight messages or requests by scheduled send time, oldest first (replies come in order).
  std::deque<uint64_t> inflight_;
  std::deque<uint64_t> backlog_;  // http: scheduled while the previous request was in flight

  // Incoming frame header being assembled, then payload bytes to skip.
  uint8_t frame_header_[14]{};
  size_t frame_header_len_ = 0;
  uint64_t payload_left_ = 0;
  uint8_t frame_opcode_ = 0;
  bool frame_fin_ = false;
  bool in_payload_ = false;

  // HTTP response framing.
  enum class Body { kHead, kLength, kChunkSize, kChunkData, kChunkCrlf, kTrailer };
  Body body_state_ = Body::kHead;
  uint64_t body_left_ = 0;
  std::string line_;
  bool response_close_ = false;
};

// The run: options, connections, schedule, statistics.
class Load {
 public:
  explicit Load(Options opts);
  int run();

  // Called by connections.
  void on_conn_up(Conn* c);
  void on_conn_failed(Conn* c, const char* why, bool was_up);
  void on_conn_closed(Conn* c);
  void on_message(Conn* c, uint64_t sched_ns);  // an echo or a response arrived
  void on_close_handshake_done(Conn* c);
  const Options& options() const { return opts_; }
  uv_loop_t* loop() { return &loop_; }
  const std::string& ws_frame() const { return ws_frame_; }
  const std::string& ws_upgrade() const { return ws_upgrade_; }
  const std::string& http_request() const { return http_request_; }
  bool websocket() const { return opts_.mode != Mode::kHttp; }
  bool running() const { return !stopping_; }
  void count_http_status(int status) {
    if (status != 200) ++non_200_;
  }

 private:
  static void on_connect_tick_cb(uv_timer_t* t);
  static void on_schedule_cb(uv_poll_t* p, int status, int events);
  static void on_sweep_cb(uv_timer_t* t);
  static void on_hold_done_cb(uv_timer_t* t);
  static void on_deadline_cb(uv_timer_t* t);

  void on_connect_tick();
  void on_schedule();
  void on_sweep();
  void all_up();
  void start_measurement();
  void arm_schedule(uint64_t at_ns);
  void stop_sending();
  void finish(bool timed_out);
  bool in_window(uint64_t t) const { return t >= measure_from_ && t < measure_to_; }
  // stop_ns_ may be a little after a `t` read earlier: compare, never subtract.
  bool grace_over(uint64_t t) const { return t > stop_ns_ + static_cast<uint64_t>(opts_.grace * kNsPerSec); }

  Options opts_;
  uv_loop_t loop_{};
  uv_timer_t connect_timer_{};
  uv_timer_t sweep_timer_{};
  uv_timer_t hold_timer_{};
  uv_timer_t deadline_timer_{};
  uv_poll_t schedule_poll_{};
  int timer_fd_ = -1;

  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<Conn*> up_;  // open connections, in the order they came up
  std::string ws_frame_;
  std::string ws_upgrade_;
  std::string http_request_;

  // Opening phase.
  uint64_t open_started_ns_ = 0;
  size_t next_to_open_ = 0;
  size_t pending_ = 0;
  size_t settled_ = 0;
  bool all_up_done_ = false;

  // Measurement.
  uint64_t t0_ = 0;
  uint64_t measure_from_ = 0;
  uint64_t measure_to_ = 0;
  uint64_t interval_ns_ = 0;  // open loop: time between two sends, all connections together
  uint64_t next_seq_ = 0;
  bool stopping_ = false;
  bool finished_ = false;
  uint64_t stop_ns_ = 0;

  Histogram latency_;
  Histogram lag_;        // open loop: how late the client itself sent (client saturation check)
  Histogram handshake_;  // connect() to 101 (or to TCP connect for http)
  uint64_t sent_ = 0;
  uint64_t received_ = 0;
  uint64_t counted_ = 0;  // replies inside the measurement window
  uint64_t connect_errors_ = 0;
  uint64_t dropped_ = 0;  // connections lost after they were up
  uint64_t lost_ = 0;     // messages without a reply at the end
  uint64_t churn_done_ = 0;   // cycles completed inside the measurement window
  uint64_t churn_total_ = 0;  // all cycles (the proxy's CPU time is divided by this)
  uint64_t non_200_ = 0;
  uint64_t ever_up_ = 0;
  std::string first_error_;
};

// ---------------------------------------------------------------------------------------------
// Conn

void Conn::connect() {
  uv_tcp_init(load_->loop(), &tcp_);
  tcp_.data = this;
  handle_open_ = true;
  state_ = State::kConnecting;
  started_ns_ = now_ns();
  last_activity_ns_ = started_ns_;
  out_.clear();
  head_.clear();
  inflight_.clear();
  backlog_.clear();
  frame_header_len_ = 0;
  in_payload_ = false;
  payload_left_ = 0;
  got_close_frame_ = false;
  body_state_ = Body::kHead;
  sockaddr_in addr{};
  uv_ip4_addr(load_->options().host.c_str(), load_->options().port, &addr);
  connect_req_.data = this;
  int rc = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&addr), on_connect_cb);
  if (rc != 0) fail(uv_strerror(rc));
}

void Conn::on_connect_cb(uv_connect_t* req, int status) { static_cast<Conn*>(req->data)->on_connect(status); }

void Conn::on_connect(int status) {
  if (state_ != State::kConnecting) return;
  if (status != 0) {
    fail(uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&tcp_, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc_cb, on_read_cb);
  if (load_->websocket()) {
    state_ = State::kHandshake;
    queue(load_->ws_upgrade());
    flush();
  } else {
    state_ = State::kOpen;
    load_->on_conn_up(this);
  }
}

void Conn::on_alloc_cb(uv_handle_t*, size_t, uv_buf_t* buf) {
  // One loop thread and every read is consumed before the next: one buffer serves all.
  static char buffer[64 * 1024];
  *buf = uv_buf_init(buffer, sizeof buffer);
}

void Conn::on_read_cb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
  static_cast<Conn*>(stream->data)->on_read(nread, buf);
}

void Conn::on_read(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  last_activity_ns_ = now_ns();
  if (nread < 0) {
    if (state_ == State::kClosing && got_close_frame_) {
      // The server closed after its Close frame: the clean end of a churn cycle.
      load_->on_close_handshake_done(this);
      close();
      return;
    }
    fail(nread == UV_EOF ? "connection closed by peer" : uv_strerror(static_cast<int>(nread)));
    return;
  }
  const char* data = buf->base;
  size_t len = static_cast<size_t>(nread);
  if (state_ == State::kHandshake) {
    size_t used = handle_handshake(data, len);
    if (state_ != State::kOpen) return;
    data += used;
    len -= used;
  }
  if (len == 0) return;
  if (load_->websocket()) {
    handle_frames(data, len);
  } else {
    handle_http(data, len);
  }
  flush();
}

size_t Conn::handle_handshake(const char* data, size_t len) {
  size_t before = head_.size();
  head_.append(data, len);
  size_t end = head_.find("\r\n\r\n");
  if (end == std::string::npos) {
    if (head_.size() > kMaxHead) fail("upgrade response head too large");
    return len;
  }
  size_t head_len = end + 4;
  std::string_view head(head_.data(), head_len);
  if (head.substr(0, 12) != "HTTP/1.1 101" || head.find(kWsAccept) == std::string_view::npos) {
    std::string line(head.substr(0, head.find('\r')));
    std::string why = "upgrade refused: " + line;
    fail(why.c_str());
    return len;
  }
  head_.clear();
  state_ = State::kOpen;
  load_->on_conn_up(this);
  return head_len - before;
}

void Conn::handle_frames(const char* data, size_t len) {
  const auto* p = reinterpret_cast<const uint8_t*>(data);
  while (len > 0 && handle_open_) {
    if (in_payload_) {
      uint64_t k = std::min<uint64_t>(payload_left_, len);
      p += k;
      len -= k;
      payload_left_ -= k;
      if (payload_left_ == 0) {
        in_payload_ = false;
        on_frame(frame_opcode_, frame_fin_);
      }
      continue;
    }
    frame_header_[frame_header_len_++] = *p++;
    --len;
    if (frame_header_len_ < 2) continue;
    size_t need = 2;
    uint8_t len7 = frame_header_[1] & 0x7f;
    if (len7 == 126) need = 4;
    if (len7 == 127) need = 10;
    if (frame_header_[1] & 0x80) need += 4;  // servers must not mask, but skip it if they do
    if (frame_header_len_ < need) continue;
    uint64_t plen = len7;
    if (len7 == 126) plen = (uint64_t{frame_header_[2]} << 8) | frame_header_[3];
    if (len7 == 127) {
      plen = 0;
      for (int i = 0; i < 8; ++i) plen = (plen << 8) | frame_header_[2 + i];
    }
    frame_opcode_ = frame_header_[0] & 0x0f;
    frame_fin_ = (frame_header_[0] & 0x80) != 0;
    frame_header_len_ = 0;
    payload_left_ = plen;
    if (plen == 0) {
      on_frame(frame_opcode_, frame_fin_);
    } else {
      in_payload_ = true;
    }
  }
}

void Conn::on_frame(uint8_t opcode, bool fin) {
  if (opcode == 0x8) {
    got_close_frame_ = true;
    if (state_ != State::kClosing) {
      // The server started the close (e.g. a proxy draining): answer it and count a drop.
      send_close_frame();
    }
    return;
  }
  if (opcode >= 0x8 || !fin) return;  // pings, pongs, and non-final fragments
  if (inflight_.empty()) return;      // an unsolicited message
  uint64_t sched = inflight_.front();
  inflight_.pop_front();
  load_->on_message(this, sched);
}

void Conn::handle_http(const char* data, size_t len) {
  while (len > 0 && handle_open_) {
    switch (body_state_) {
      case Body::kHead: {
        size_t before = head_.size();
        head_.append(data, std::min(len, kMaxHead));
        size_t end = head_.find("\r\n\r\n");
        if (end == std::string::npos) {
          if (head_.size() >= kMaxHead) fail("response head too large");
          return;
        }
        size_t used = end + 4 - before;
        head_.resize(end + 4);
        data += used;
        len -= used;
        if (!parse_response_head()) return;
        head_.clear();
        if (body_state_ == Body::kHead) on_response();  // no body
        break;
      }
      case Body::kLength: {
        uint64_t k = std::min<uint64_t>(body_left_, len);
        data += k;
        len -= k;
        body_left_ -= k;
        if (body_left_ == 0) {
          body_state_ = Body::kHead;
          on_response();
        }
        break;
      }
      case Body::kChunkData: {
        uint64_t k = std::min<uint64_t>(body_left_, len);
        data += k;
        len -= k;
        body_left_ -= k;
        if (body_left_ == 0) {
          body_state_ = Body::kChunkCrlf;
          line_.clear();
        }
        break;
      }
      case Body::kChunkSize:
      case Body::kChunkCrlf:
      case Body::kTrailer: {
        const char* nl = static_cast<const char*>(memchr(data, '\n', len));
        size_t take = nl ? static_cast<size_t>(nl - data) + 1 : len;
        line_.append(data, take);
        data += take;
        len -= take;
        if (!nl) break;
        if (body_state_ == Body::kChunkCrlf) {
          body_state_ = Body::kChunkSize;
        } else if (body_state_ == Body::kChunkSize) {
          uint64_t size = strtoull(line_.c_str(), nullptr, 16);
          if (size == 0) {
            body_state_ = Body::kTrailer;
          } else {
            body_state_ = Body::kChunkData;
            body_left_ = size;
          }
        } else if (line_ == "\r\n") {
          body_state_ = Body::kHead;
          on_response();
        }
        line_.clear();
        break;
      }
    }
  }
}

bool Conn::parse_response_head() {
  if (head_.size() < 12 || head_.compare(0, 7, "HTTP/1.") != 0) {
    fail("bad response status line");
    return false;
  }
  load_->count_http_status(atoi(head_.c_str() + 9));
  response_close_ = false;
  body_state_ = Body::kHead;
  // Header names are matched case-insensitively on a lowered copy; the head is small.
  std::string lower(head_);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return static_cast<char>(tolower(ch)); });
  size_t at;
  if ((at = lower.find("\r\ntransfer-encoding:")) != std::string::npos &&
      lower.find("chunked", at) < lower.find("\r\n", at + 2)) {
    body_state_ = Body::kChunkSize;
    line_.clear();
  } else if ((at = lower.find("\r\ncontent-length:")) != std::string::npos) {
    body_left_ = strtoull(lower.c_str() + at + 17, nullptr, 10);
    if (body_left_ > 0) body_state_ = Body::kLength;
  }
  if ((at = lower.find("\r\nconnection:")) != std::string::npos &&
      lower.find("close", at) < lower.find("\r\n", at + 2)) {
    response_close_ = true;
  }
  return true;
}

void Conn::on_response() {
  if (inflight_.empty()) {
    fail("response without a request");
    return;
  }
  uint64_t sched = inflight_.front();
  inflight_.pop_front();
  load_->on_message(this, sched);
  if (response_close_) {
    fail("server closed the keep-alive connection");
    return;
  }
  if (!backlog_.empty() && handle_open_) {
    uint64_t next = backlog_.front();
    backlog_.pop_front();
    send_http_request(next);
  }
}

void Conn::send_message(uint64_t sched_ns) {
  if (state_ != State::kOpen) return;
  if (!load_->websocket()) {
    if (inflight_.empty()) {
      send_http_request(sched_ns);
    } else {
      backlog_.push_back(sched_ns);
    }
    return;
  }
  inflight_.push_back(sched_ns);
  queue(load_->ws_frame());
  flush();
}

void Conn::send_http_request(uint64_t sched_ns) {
  inflight_.push_back(sched_ns);
  queue(load_->http_request());
  flush();
}

void Conn::send_close_frame() {
  // Masked Close 1000; a fixed mask is fine for a benchmark (proxies do not unmask).
  static const uint8_t kClose[] = {0x88, 0x82, 0x11, 0x22, 0x33, 0x44, 0x03 ^ 0x11, 0xe8 ^ 0x22};
  state_ = State::kClosing;
  queue(std::string_view(reinterpret_cast<const char*>(kClose), sizeof kClose));
  flush();
}

void Conn::flush() {
  if (out_.empty() || write_pending_ || !handle_open_) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  uv_buf_t b = uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
  int n = uv_try_write(stream, &b, 1);
  if (n == static_cast<int>(out_.size())) {
    out_.clear();
    return;
  }
  if (n < 0 && n != UV_EAGAIN) {
    fail(uv_strerror(n));
    return;
  }
  if (n > 0) out_.erase(0, static_cast<size_t>(n));
  writing_.swap(out_);
  out_.clear();
  b = uv_buf_init(writing_.data(), static_cast<unsigned>(writing_.size()));
  write_req_.data = this;
  write_pending_ = true;
  int rc = uv_write(&write_req_, stream, &b, 1, on_write_cb);
  if (rc != 0) {
    write_pending_ = false;
    fail(uv_strerror(rc));
  }
}

void Conn::on_write_cb(uv_write_t* req, int status) { static_cast<Conn*>(req->data)->on_write(status); }

void Conn::on_write(int status) {
  write_pending_ = false;
  writing_.clear();
  if (status == UV_ECANCELED) return;  // closing
  if (status < 0) {
    fail(uv_strerror(status));
    return;
  }
  flush();
}

void Conn::fail(const char* why) {
  if (!handle_open_) return;
  bool was_up = state_ == State::kOpen || state_ == State::kClosing;
  load_->on_conn_failed(this, why, was_up);
  close();
}

void Conn::close() {
  if (!handle_open_) return;
  handle_open_ = false;
  state_ = State::kClosed;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close_cb);
}

void Conn::on_close_cb(uv_handle_t* handle) { static_cast<Conn*>(handle->data)->on_close(); }

void Conn::on_close() {
  state_ = State::kIdle;
  load_->on_conn_closed(this);
}

// ---------------------------------------------------------------------------------------------
// Load

Load::Load(Options opts) : opts_(std::move(opts)) {
  uv_loop_init(&loop_);
  std::string host = opts_.host + ":" + std::to_string(opts_.port);
  ws_upgrade_ = "GET " + opts_.path + " HTTP/1.1\r\nHost: " + host +
                "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + std::string(kWsKey) +
                "\r\nSec-WebSocket-Version: 13\r\n\r\n";
  http_request_ = "GET " + opts_.path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n";
  // One masked binary frame, built once: proxies forward payloads untouched, so every message
  // can be the same bytes and the client spends nothing on masking.
  const uint8_t mask[4] = {0x5a, 0xc3, 0x3c, 0xa5};
  std::string f;
  f.push_back(static_cast<char>(0x82));
  if (opts_.size < 126) {
    f.push_back(static_cast<char>(0x80 | opts_.size));
  } else if (opts_.size <= 0xffff) {
    f.push_back(static_cast<char>(0x80 | 126));
    f.push_back(static_cast<char>(opts_.size >> 8));
    f.push_back(static_cast<char>(opts_.size & 0xff));
  } else {
    f.push_back(static_cast<char>(0x80 | 127));
    for (int i = 0; i < 8; ++i) f.push_back(static_cast<char>((opts_.size >> (56 - 8 * i)) & 0xff));
  }
  f.append(reinterpret_cast<const char*>(mask), 4);
  for (size_t i = 0; i < opts_.size; ++i) f.push_back(static_cast<char>(('a' + i % 26) ^ mask[i & 3]));
  ws_frame_ = std::move(f);
  conns_.reserve(static_cast<size_t>(opts_.conns));
  for (int i = 0; i < opts_.conns; ++i) conns_.push_back(std::make_unique<Conn>(this, static_cast<size_t>(i)));
}

int Load::run() {
  // Default timer slack (50 us) would blur sub-millisecond schedules.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  timer_fd_ = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (timer_fd_ < 0) {
    perror("wsload: timerfd_create");
    return 2;
  }
  uv_poll_init(&loop_, &schedule_poll_, timer_fd_);
  schedule_poll_.data = this;
  uv_poll_start(&schedule_poll_, UV_READABLE, on_schedule_cb);
  uv_timer_init(&loop_, &connect_timer_);
  uv_timer_init(&loop_, &sweep_timer_);
  uv_timer_init(&loop_, &hold_timer_);
  uv_timer_init(&loop_, &deadline_timer_);
  connect_timer_.data = sweep_timer_.data = hold_timer_.data = deadline_timer_.data = this;

  // Every load stops by itself: opening at the configured rate, the run, the grace, plus margin.
  double open_s = opts_.connect_rate > 0 ? opts_.conns / opts_.connect_rate : 0;
  double total_s = open_s * 2 + 30 + opts_.warmup + opts_.duration + opts_.grace +
                   (opts_.mode == Mode::kIdle ? opts_.hold : 0);
  uv_timer_start(&deadline_timer_, on_deadline_cb, static_cast<uint64_t>(total_s * 1000), 0);
  uv_timer_start(&sweep_timer_, on_sweep_cb, 100, 100);

  open_started_ns_ = now_ns();
  if (opts_.mode == Mode::kChurn) {
    // Churn measures from the first connection on: every slot loops connect → close.
    start_measurement();
    for (auto& c : conns_) c->connect();
  } else {
    uv_timer_start(&connect_timer_, on_connect_tick_cb, 0, 1);
  }
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
  ::close(timer_fd_);
  return first_error_.empty() || ever_up_ > 0 ? 0 : 1;
}

void Load::on_connect_tick_cb(uv_timer_t* t) { static_cast<Load*>(t->data)->on_connect_tick(); }

void Load::on_connect_tick() {
  double elapsed = static_cast<double>(now_ns() - open_started_ns_) / kNsPerSec;
  size_t allowed = opts_.connect_rate > 0 ? static_cast<size_t>(elapsed * opts_.connect_rate) + 1 : conns_.size();
  while (next_to_open_ < conns_.size() && next_to_open_ < allowed &&
         pending_ < static_cast<size_t>(opts_.max_pending)) {
    ++pending_;
    conns_[next_to_open_++]->connect();
  }
  if (next_to_open_ == conns_.size()) uv_timer_stop(&connect_timer_);
}

void Load::on_conn_up(Conn* c) {
  ++ever_up_;
  handshake_.record(now_ns() - c->started_ns());
  if (opts_.mode == Mode::kChurn) {
    if (running()) {
      c->send_message(now_ns());
    } else {
      c->close();
    }
    return;
  }
  --pending_;
  ++settled_;
  up_.push_back(c);
  if (settled_ == conns_.size()) all_up();
}

void Load::on_conn_failed(Conn* c, const char* why, bool was_up) {
  if (first_error_.empty()) {
    first_error_ = why;
    fprintf(stderr, "wsload: connection %zu: %s\n", c->index(), why);
  }
  if (was_up) {
    lost_ += c->outstanding();
    if (!finished_ && !(opts_.mode == Mode::kChurn && c->state() == Conn::State::kClosing)) ++dropped_;
    up_.erase(std::remove(up_.begin(), up_.end(), c), up_.end());
    return;
  }
  ++connect_errors_;
  if (opts_.mode == Mode::kChurn) return;
  --pending_;
  ++settled_;
  if (settled_ == conns_.size()) all_up();
}

void Load::on_conn_closed(Conn* c) {
  // Churn: the slot starts its next connection as soon as the last one is fully closed.
  if (opts_.mode == Mode::kChurn && running()) c->connect();
}

void Load::on_close_handshake_done(Conn*) {
  uint64_t t = now_ns();
  ++churn_total_;
  if (in_window(t)) ++churn_done_;
}

void Load::on_message(Conn* c, uint64_t sched_ns) {
  uint64_t t = now_ns();
  ++received_;
  switch (opts_.mode) {
    case Mode::kEcho:
    case Mode::kHttp:
      if (in_window(sched_ns)) {
        ++counted_;
        latency_.record(t - sched_ns);
      }
      break;
    case Mode::kThroughput:
      if (in_window(t)) {
        ++counted_;
        latency_.record(t - sched_ns);
      }
      if (running()) {
        ++sent_;
        c->send_message(t);
      }
      break;
    case Mode::kChurn:
      c->send_close_frame();
      break;
    case Mode::kIdle:
      break;
  }
  if (stopping_ && !finished_) {
    bool idle = std::all_of(up_.begin(), up_.end(), [](Conn* x) { return x->outstanding() == 0; });
    if (idle) finish(false);
  }
}

void Load::all_up() {
  if (all_up_done_) return;
  all_up_done_ = true;
  double secs = static_cast<double>(now_ns() - open_started_ns_) / kNsPerSec;
  fprintf(stderr, "wsload: %zu of %zu connections up in %.2f s (%" PRIu64 " failed)\n", up_.size(), conns_.size(),
          secs, connect_errors_);
  if (up_.empty()) {
    finish(false);
    return;
  }
  if (opts_.mode == Mode::kIdle) {
    if (!opts_.ready_file.empty()) {
      std::string tmp = opts_.ready_file + ".tmp";
      FILE* f = fopen(tmp.c_str(), "w");
      if (f != nullptr) {
        fprintf(f, "{\"open\": %zu, \"failed\": %" PRIu64 "}\n", up_.size(), connect_errors_);
        fclose(f);
        rename(tmp.c_str(), opts_.ready_file.c_str());  // atomic: readers never see half a file
      }
    }
    uv_timer_start(&hold_timer_, on_hold_done_cb, static_cast<uint64_t>(opts_.hold * 1000), 0);
    return;
  }
  start_measurement();
  uint64_t first = t0_;
  if (opts_.mode == Mode::kThroughput) {
    for (Conn* c : up_) {
      for (int i = 0; i < opts_.window; ++i) {
        ++sent_;
        c->send_message(now_ns());
      }
    }
    return;
  }
  double per_sec = opts_.mode == Mode::kEcho ? opts_.msg_rate * static_cast<double>(up_.size()) : opts_.rate;
  interval_ns_ = static_cast<uint64_t>(static_cast<double>(kNsPerSec) / per_sec);
  if (interval_ns_ == 0) interval_ns_ = 1;
  arm_schedule(first);
}

void Load::start_measurement() {
  // A short pause after the opening burst so the first scheduled sends are not already late.
  t0_ = now_ns() + (opts_.mode == Mode::kChurn || opts_.mode == Mode::kThroughput ? 0 : 20 * kNsPerMs);
  measure_from_ = t0_ + static_cast<uint64_t>(opts_.warmup * kNsPerSec);
  measure_to_ = measure_from_ + static_cast<uint64_t>(opts_.duration * kNsPerSec);
  stop_ns_ = measure_to_;
}

void Load::arm_schedule(uint64_t at_ns) {
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(at_ns / kNsPerSec);
  its.it_value.tv_nsec = static_cast<long>(at_ns % kNsPerSec);
  timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &its, nullptr);
}

void Load::on_schedule_cb(uv_poll_t* p, int, int) { static_cast<Load*>(p->data)->on_schedule(); }

void Load::on_schedule() {
  uint64_t expirations;
  if (read(timer_fd_, &expirations, sizeof expirations) < 0 && errno != EAGAIN) return;
  if (stopping_ || up_.empty()) return;
  uint64_t t = now_ns();
  for (;;) {
    uint64_t sched = t0_ + next_seq_ * interval_ns_;
    if (sched >= stop_ns_) {
      stop_sending();
      return;
    }
    if (sched > t) {
      arm_schedule(sched);
      return;
    }
    Conn* c = up_[next_seq_ % up_.size()];
    ++next_seq_;
    ++sent_;
    lag_.record(t - sched);
    c->send_message(sched);
  }
}

void Load::on_sweep_cb(uv_timer_t* t) { static_cast<Load*>(t->data)->on_sweep(); }

void Load::on_sweep() {
  uint64_t t = now_ns();
  if (opts_.mode == Mode::kChurn) {
    if (!stopping_ && t >= stop_ns_) stop_sending();
    // A slot stuck for 5 s (a lost SYN, a proxy that never answers) is an error, then retried.
    for (auto& c : conns_) {
      if (c->state() != Conn::State::kIdle && c->state() != Conn::State::kClosed &&
          t - c->last_activity_ns() > 5 * kNsPerSec) {
        c->close();
        ++connect_errors_;
      }
    }
    if (stopping_) {
      bool all_idle = std::all_of(conns_.begin(), conns_.end(),
                                  [](const auto& c) { return c->state() == Conn::State::kIdle; });
      if (all_idle || grace_over(t)) finish(false);
    }
    return;
  }
  if (opts_.mode == Mode::kThroughput && !stopping_ && t0_ != 0 && t >= stop_ns_) stop_sending();
  if (stopping_ && !finished_ && grace_over(t)) finish(false);
}

void Load::stop_sending() {
  if (stopping_) return;
  stopping_ = true;
  stop_ns_ = std::max(stop_ns_, now_ns());
  bool idle = std::all_of(up_.begin(), up_.end(), [](Conn* x) { return x->outstanding() == 0; });
  if (idle && opts_.mode != Mode::kChurn) finish(false);
}

void Load::on_hold_done_cb(uv_timer_t* t) {
  auto* self = static_cast<Load*>(t->data);
  self->stopping_ = true;
  self->finish(false);
}

void Load::on_deadline_cb(uv_timer_t* t) {
  fprintf(stderr, "wsload: deadline reached, stopping\n");
  static_cast<Load*>(t->data)->finish(true);
}

void Load::finish(bool timed_out) {
  if (finished_) return;
  finished_ = true;
  stopping_ = true;
  for (Conn* c : up_) lost_ += c->outstanding();
  const char* mode = "echo";
  double rate = 0;
  double secs = opts_.duration;
  switch (opts_.mode) {
    case Mode::kIdle:
      mode = "idle";
      break;
    case Mode::kEcho:
      mode = "echo";
      rate = static_cast<double>(counted_) / secs;
      break;
    case Mode::kThroughput:
      mode = "throughput";
      rate = static_cast<double>(counted_) / secs;
      break;
    case Mode::kChurn:
      mode = "churn";
      rate = static_cast<double>(churn_done_) / secs;
      break;
    case Mode::kHttp:
      mode = "http";
      rate = static_cast<double>(counted_) / secs;
      break;
  }
  size_t open_now = opts_.mode == Mode::kChurn ? 0 : up_.size();
  printf(
      "{\"mode\": \"%s\", \"target\": \"%s:%d%s\", \"conns\": %d, \"open\": %zu, \"connect_errors\": %" PRIu64
      ", \"dropped\": %" PRIu64 ", \"sent\": %" PRIu64 ", \"received\": %" PRIu64 ", \"counted\": %" PRIu64
      ", \"lost\": %" PRIu64 ", \"non_200\": %" PRIu64 ", \"churn_done\": %" PRIu64 ", \"churn_total\": %" PRIu64
      ", \"duration_s\": %.3f, \"rate\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f"
      ", \"p999_us\": %.1f, \"max_us\": %.1f, \"lag_p99_us\": %.1f, \"lag_max_us\": %.1f"
      ", \"handshake_p50_us\": %.1f, \"handshake_p99_us\": %.1f, \"timed_out\": %s, \"first_error\": \"%s\"}\n",
      mode, opts_.host.c_str(), opts_.port, opts_.path.c_str(), opts_.conns, open_now, connect_errors_, dropped_,
      sent_, received_, counted_, lost_, non_200_, churn_done_, churn_total_, secs, rate, to_us(latency_.quantile(0.50)),
      to_us(latency_.quantile(0.90)), to_us(latency_.quantile(0.99)), to_us(latency_.quantile(0.999)),
      to_us(latency_.max()), to_us(lag_.quantile(0.99)), to_us(lag_.max()), to_us(handshake_.quantile(0.50)),
      to_us(handshake_.quantile(0.99)), timed_out ? "true" : "false", first_error_.c_str());
  fflush(stdout);
  // Tear down: every handle closed so the loop ends by itself.
  uv_timer_stop(&connect_timer_);
  uv_close(reinterpret_cast<uv_handle_t*>(&connect_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&sweep_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&hold_timer_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&deadline_timer_), nullptr);
  uv_poll_stop(&schedule_poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(&schedule_poll_), nullptr);
  for (auto& c : conns_) c->close();
}

// ---------------------------------------------------------------------------------------------

[[noreturn]] void usage(const char* why) {
  if (why != nullptr) fprintf(stderr, "wsload: %s\n", why);
  fprintf(stderr,
          "usage: wsload idle|echo|throughput|churn|http --port N [--host 127.0.0.1] [--path /]\n"
          "         [--conns N] [--connect-rate N/s] [--max-pending N] [--msg-rate N/s per conn]\n"
          "         [--rate N/s total, http] [--window N] [--size BYTES] [--duration S] [--warmup S]\n"
          "         [--hold S] [--grace S] [--ready-file PATH]\n");
  exit(2);
}

Options parse_options(int argc, char** argv) {
  if (argc < 2) usage(nullptr);
  Options o;
  std::string_view mode = argv[1];
  if (mode == "idle") {
    o.mode = Mode::kIdle;
  } else if (mode == "echo") {
    o.mode = Mode::kEcho;
  } else if (mode == "throughput") {
    o.mode = Mode::kThroughput;
  } else if (mode == "churn") {
    o.mode = Mode::kChurn;
  } else if (mode == "http") {
    o.mode = Mode::kHttp;
  } else {
    usage("unknown mode");
  }
  for (int i = 2; i < argc; ++i) {
    std::string_view k = argv[i];
    if (i + 1 >= argc) usage("option without a value");
    const char* v = argv[++i];
    if (k == "--host") {
      o.host = v;
    } else if (k == "--port") {
      o.port = atoi(v);
    } else if (k == "--path") {
      o.path = v;
    } else if (k == "--conns") {
      o.conns = atoi(v);
    } else if (k == "--connect-rate") {
      o.connect_rate = atof(v);
    } else if (k == "--max-pending") {
      o.max_pending = atoi(v);
    } else if (k == "--msg-rate") {
      o.msg_rate = atof(v);
    } else if (k == "--rate") {
      o.rate = atof(v);
    } else if (k == "--window") {
      o.window = atoi(v);
    } else if (k == "--size") {
      o.size = static_cast<size_t>(atol(v));
    } else if (k == "--duration") {
      o.duration = atof(v);
    } else if (k == "--warmup") {
      o.warmup = atof(v);
    } else if (k == "--hold") {
      o.hold = atof(v);
    } else if (k == "--grace") {
      o.grace = atof(v);
    } else if (k == "--ready-file") {
      o.ready_file = v;
    } else {
      usage("unknown option");
    }
  }
  if (o.port <= 0 || o.port > 65535) usage("--port is required");
  if (o.conns < 1 || o.duration <= 0 || o.window < 1 || o.msg_rate <= 0 || o.rate <= 0) usage("bad value");
  if (o.host != "127.0.0.1" && o.host != "localhost") usage("loopback only: --host 127.0.0.1");
  if (o.host == "localhost") o.host = "127.0.0.1";
  return o;
}

}  // namespace
}  // namespace wsload

int main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  wsload::Load load(wsload::parse_options(argc, argv));
  return load.run();
}
