// Proxy core test harness: a real uv loop, real TCP on 127.0.0.1 (OS ports), raw-libuv test peers
// with hand-written bytes and their own HTTP/WebSocket reader (never limpet's parser: a shared bug
// would cancel out), a deadline on every wait and a final check that every uv handle was closed.
// Test thread only.
#pragma once

#include <gtest/gtest.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/config/config.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/context.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "limpet/util/clock.hpp"

namespace limpet::proxy::testing {

// ---------------------------------------------------------------------------------------------
// Raw peers

// A TCP connection on raw libuv. Reads accumulate into `in` (unless `accumulate` is off, for
// transfers of many megabytes checked piece by piece in `on_data`).
class RawConn {
 public:
  explicit RawConn(uv_loop_t* loop);
  RawConn(const RawConn&) = delete;
  RawConn& operator=(const RawConn&) = delete;

  void connect(uint16_t port);  // to 127.0.0.1:port; connect_status is set when done
  void start_reading();
  void stop_reading();
  bool reading() const { return reading_; }
  void write(std::string data);
  // Writes `total` bytes of pattern(offset) in pieces, keeping at most `window` bytes queued,
  // so that a multi-megabyte upload follows the peer's pace (it is flow-controlled, as a real
  // client's would be).
  void pump(uint64_t total, size_t window = 1 << 20);
  void shutdown();  // FIN after the queued writes
  void close();
  uint16_t local_port() const;
  uint16_t remote_port() const;
  uv_tcp_t* tcp() { return &tcp_; }

  std::string in;
  uint64_t bytes_in = 0;
  bool accumulate = true;
  bool eof = false;
  int read_error = 0;
  int connect_status = 1;  // 1: pending
  bool closed = false;     // the close callback ran
  size_t write_pending = 0;
  uint64_t bytes_written = 0;  // completed writes
  int write_error = 0;
  std::function<void(RawConn&, std::string_view)> on_data;
  std::function<void(RawConn&)> on_written;  // after each completed write
  std::function<void(RawConn&)> on_eof;

 private:
  static void on_alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write_cb(uv_write_t* req, int status);
  static void on_connect_cb(uv_connect_t* req, int status);
  static void on_close_cb(uv_handle_t* h);
  void pump_more();

  uv_tcp_t tcp_{};
  uv_connect_t connect_req_{};
  std::unique_ptr<char[]> buffer_;
  bool reading_ = false;
  bool closing_ = false;
  bool shutdown_wanted_ = false;
  bool shutdown_sent_ = false;
  uint64_t pump_total_ = 0;
  uint64_t pump_sent_ = 0;
  size_t pump_window_ = 0;
};

// The byte at `offset` of a pumped transfer: position-dependent, so a lost, doubled or reordered
// piece shows.
inline char pattern(uint64_t offset) {
  return static_cast<char>(((offset * 2654435761u) >> 11) ^ (offset >> 16));
}
// Index of the first byte of `data` that is not pattern(offset + i), or npos.
size_t pattern_mismatch(std::string_view data, uint64_t offset);

class RawNet;

// A listening socket on 127.0.0.1:0 whose accepted connections start reading at once.
class RawServer {
 public:
  RawServer(uv_loop_t* loop, RawNet& net);
  RawServer(const RawServer&) = delete;
  RawServer& operator=(const RawServer&) = delete;
  uint16_t port() const { return port_; }
  void close();

  std::vector<RawConn*> conns;
  std::function<void(RawConn&)> on_accept;

 private:
  static void on_connection_cb(uv_stream_t* s, int status);
  uv_tcp_t tcp_{};
  RawNet& net_;
  uint16_t port_ = 0;
  bool closed_ = false;
};

// Owns the raw peers until the fixture ends (after their close callbacks have run).
class RawNet {
 public:
  explicit RawNet(uv_loop_t* loop) : loop_(loop) {}
  RawConn& conn();
  RawServer& server();
  void close_all();

 private:
  uv_loop_t* loop_;
  std::deque<std::unique_ptr<RawConn>> conns_;
  std::deque<std::unique_ptr<RawServer>> servers_;
};

// A port on 127.0.0.1 that refuses connections: bound, never listening, until the test ends.
class RefusedPort {
 public:
  RefusedPort();
  ~RefusedPort();
  RefusedPort(const RefusedPort&) = delete;
  RefusedPort& operator=(const RefusedPort&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// A listening socket whose accepted connections become net::Streams (the side limpet's objects
// use), each handed to `delegate` and reading at once. The test closes the streams it got.
class StreamAcceptor {
 public:
  StreamAcceptor(uv_loop_t* loop, BufferPool* buffers);
  StreamAcceptor(const StreamAcceptor&) = delete;
  StreamAcceptor& operator=(const StreamAcceptor&) = delete;
  uint16_t port() const { return port_; }
  void close();

  std::vector<net::Stream*> streams;
  net::StreamDelegate* delegate = nullptr;

 private:
  static void on_connection_cb(uv_stream_t* s, int status);
  uv_tcp_t tcp_{};
  uv_loop_t* loop_;
  BufferPool* buffers_;
  uint16_t port_ = 0;
  bool closed_ = false;
};

// ---------------------------------------------------------------------------------------------
// Hand-written HTTP/1.1 and WebSocket reading (test peers only)

struct RawMessage {
  std::string start_line;  // "HTTP/1.1 200 OK" / "GET / HTTP/1.1"
  int status = 0;          // responses
  std::string method, target;  // requests
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  std::string head;  // the raw head, CRLFCRLF included
  std::string body;  // decoded
  std::string raw;   // the message's bytes as they came
  size_t size = 0;   // bytes of the input the message took
  std::optional<std::string> header(std::string_view lower_name) const;
};

std::string to_lower(std::string_view s);

// The first complete message at the start of `in`, or nullopt. Bodies: Content-Length, chunked,
// none for requests without either and for 1xx/204/304 responses; a response with neither is
// until-close and is complete only when `eof`.
std::optional<RawMessage> read_message(std::string_view in, bool response, bool eof = false);
// Takes every complete message off the front of `in`.
std::vector<RawMessage> take_messages(std::string& in, bool response, bool eof = false);

struct WsFrame {
  bool fin = true;
  uint8_t opcode = 0;
  bool masked = false;
  std::string payload;  // unmasked
  size_t size = 0;
  uint16_t close_code() const;
};

std::string ws_frame(uint8_t opcode, std::string_view payload, bool masked, uint32_t mask = 0x11223344,
                     bool fin = true);
// Complete frames at the front of `in`; `consumed` gets their total size.
std::vector<WsFrame> read_frames(std::string_view in, size_t* consumed = nullptr);

// A backend on a RawServer: every complete request is recorded and answered with what
// `respond` returns (nothing for nullopt: the test answers, closes, or goes raw itself). After
// set_raw(conn) the connection's bytes are no longer read as HTTP (a tunnel after a 101).
class FakeBackend {
 public:
  explicit FakeBackend(RawNet& net);
  uint16_t port() const { return server.port(); }
  void set_raw(RawConn& conn) { raw.push_back(&conn); }
  // "HTTP/1.1 200 OK" with `body` and a Content-Length.
  static std::string ok(std::string_view body, std::string_view extra_headers = "");

  RawServer& server;
  std::vector<RawMessage> requests;
  std::vector<RawConn*> request_conns;  // the connection each request came on
  std::vector<RawConn*> raw;
  std::function<std::optional<std::string>(RawConn&, const RawMessage&)> respond;

 private:
  void on_data(RawConn& c);
};

// ---------------------------------------------------------------------------------------------
// Fixtures

// A uv loop with a guard timer for every wait, and the end-of-test handle check.
class LoopTest : public ::testing::Test {
 protected:
  LoopTest();
  void SetUp() override;
  void TearDown() override;
  // Called first in TearDown: let go of the objects under test (closing what they hold).
  virtual void release() {}
  // Called last, after the handle check: close the fixture's long-lived handles.
  virtual void close_own() {}
  // True once nothing but the fixture's own handles is left.
  virtual bool quiet();

  // Runs the loop until `done` or `timeout_ms` passed; the result is done().
  bool run_until(const std::function<bool()>& done, uint64_t timeout_ms = 5000);
  uint64_t now_ms() { return uv_now(&loop_); }
  // Handles on the loop other than the fixture's own (the guard timer, the graveyard's check).
  std::vector<std::string> open_handles();

  uv_loop_t loop_{};
  uv_timer_t guard_{};
  std::vector<const uv_handle_t*> own_handles_;
  bool expired_ = false;
  RawNet net_{&loop_};
};

// A worker, a listener and an upstream of real backends, as a worker thread would hold them.
class ProxyTest : public LoopTest {
 protected:
  ProxyTest();
  void SetUp() override;
  void TearDown() override;
  void release() override;
  void close_own() override;
  bool quiet() override;

  // A backend named `name` at 127.0.0.1:port; call before build().
  void add_backend(std::string name, uint16_t port);
  // A FakeBackend listening, added as backend `name`; its default answer is 200 with the target.
  FakeBackend& backend(std::string name);
  // Every connection `server` accepted until now has been accepted: a probe connected after them
  // is accepted last. Returns how many non-probe connections the server has.
  size_t settled_conns(RawServer& server);
  void build();
  // A limpet listener on 127.0.0.1:0 feeding ClientConnection::start; returns its port.
  uint16_t listen();
  // A raw client connected to the listener.
  RawConn& client();

  balancer::BackendState& state(int i) const { return *upstream_->backends()[static_cast<size_t>(i)].state; }
  int64_t total_in_flight() const;
  // The worker's open client connections (whatever container WorkerContext keeps them in).
  std::vector<ClientConnection*> connections() const;
  size_t open_count() const { return worker_.connections.size(); }
  ClientConnection* only_connection() const;
  // Calls what the worker's runtime calls about once a second on every connection (an idle
  // tunnel's sweep), every `every_ms`, if ClientConnection has such a hook; else nothing is
  // needed (the connection's own timer watches idle tunnels).
  void start_sweeper(uint64_t every_ms);

  config::UpstreamConfig ucfg_;
  config::ListenerConfig lcfg_;
  balancer::BackendRegistry registry_;
  ManualClock clock_{1000000};
  std::shared_ptr<balancer::AffinityTable> affinity_;
  std::shared_ptr<const balancer::Upstream> upstream_;
  ListenerCounters listener_counters_;  // outlives every connection (declared before them)
  WorkerContext worker_;
  std::shared_ptr<ListenerContext> listener_;
  std::deque<std::unique_ptr<FakeBackend>> backends_;
  uv_timer_t sweeper_{};
  bool sweeper_started_ = false;
  uv_tcp_t listen_tcp_{};
  bool listening_ = false;
  uint16_t listen_port_ = 0;
};

}  // namespace limpet::proxy::testing
