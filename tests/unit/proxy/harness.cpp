#include "harness.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <cstring>

#include "limpet/net/stream.hpp"
#include "limpet/proxy/client_connection.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy::testing {
namespace {

constexpr size_t kReadBuffer = 64 * 1024;

struct WriteReq {
  uv_write_t req{};
  std::string data;
  RawConn* conn = nullptr;
};

sockaddr_in loopback(uint16_t port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

uint16_t bound_port(const uv_tcp_t* tcp) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

const char* handle_type(const uv_handle_t* h) { return uv_handle_type_name(uv_handle_get_type(h)); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// RawConn

RawConn::RawConn(uv_loop_t* loop) : buffer_(new char[kReadBuffer]) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
}

void RawConn::connect(uint16_t port) {
  sockaddr_in addr = loopback(port);
  connect_req_.data = this;
  int rc = uv_tcp_connect(&connect_req_, &tcp_, reinterpret_cast<const sockaddr*>(&addr), on_connect_cb);
  if (rc != 0) connect_status = rc;
}

void RawConn::on_connect_cb(uv_connect_t* req, int status) {
  auto* self = static_cast<RawConn*>(req->data);
  self->connect_status = status;
  if (status == 0) self->start_reading();
}

void RawConn::start_reading() {
  if (reading_ || closing_) return;
  if (uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), on_alloc_cb, on_read_cb) == 0) reading_ = true;
}

void RawConn::stop_reading() {
  if (!reading_) return;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  reading_ = false;
}

void RawConn::on_alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<RawConn*>(h->data);
  buf->base = self->buffer_.get();
  buf->len = kReadBuffer;
}

void RawConn::on_read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<RawConn*>(s->data);
  if (nread > 0) {
    std::string_view data(buf->base, static_cast<size_t>(nread));
    self->bytes_in += data.size();
    if (self->accumulate) self->in.append(data);
    if (self->on_data) self->on_data(*self, data);
    return;
  }
  if (nread < 0) {
    self->stop_reading();
    if (nread == UV_EOF) {
      self->eof = true;
    } else {
      self->read_error = static_cast<int>(nread);
    }
    if (self->on_eof) self->on_eof(*self);
  }
}

void RawConn::write(std::string data) {
  if (closing_ || data.empty()) return;
  auto* w = new WriteReq;
  w->data = std::move(data);
  w->conn = this;
  w->req.data = w;
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  write_pending += w->data.size();
  int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1, on_write_cb);
  if (rc != 0) {
    write_pending -= w->data.size();
    write_error = rc;
    delete w;
  }
}

void RawConn::on_write_cb(uv_write_t* req, int status) {
  std::unique_ptr<WriteReq> w(static_cast<WriteReq*>(req->data));
  RawConn* self = w->conn;
  self->write_pending -= w->data.size();
  if (status != 0) {
    self->write_error = status;
    return;
  }
  self->bytes_written += w->data.size();
  if (self->closing_) return;
  self->pump_more();
  if (self->shutdown_wanted_ && !self->shutdown_sent_ && self->write_pending == 0 &&
      self->pump_sent_ == self->pump_total_) {
    self->shutdown();
  }
  if (self->on_written) self->on_written(*self);
}

void RawConn::pump(uint64_t total, size_t window) {
  pump_total_ += total;
  pump_window_ = window;
  pump_more();
}

void RawConn::pump_more() {
  constexpr size_t kPiece = 64 * 1024;
  while (pump_sent_ < pump_total_ && write_pending < pump_window_ && !closing_) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(kPiece, pump_total_ - pump_sent_));
    std::string piece(n, '\0');
    for (size_t i = 0; i < n; ++i) piece[i] = pattern(pump_sent_ + i);
    pump_sent_ += n;
    write(std::move(piece));
  }
}

void RawConn::shutdown() {
  shutdown_wanted_ = true;
  if (shutdown_sent_ || closing_ || write_pending > 0 || pump_sent_ < pump_total_) return;
  shutdown_sent_ = true;
  auto* req = new uv_shutdown_t;
  if (uv_shutdown(req, reinterpret_cast<uv_stream_t*>(&tcp_), [](uv_shutdown_t* r, int) { delete r; }) != 0) {
    delete req;
  }
}

void RawConn::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close_cb);
}

void RawConn::on_close_cb(uv_handle_t* h) { static_cast<RawConn*>(h->data)->closed = true; }

uint16_t RawConn::local_port() const { return bound_port(&tcp_); }

uint16_t RawConn::remote_port() const {
  sockaddr_storage ss{};
  int len = sizeof ss;
  uv_tcp_getpeername(&tcp_, reinterpret_cast<sockaddr*>(&ss), &len);
  return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
}

size_t pattern_mismatch(std::string_view data, uint64_t offset) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (data[i] != pattern(offset + i)) return i;
  }
  return std::string_view::npos;
}

// ---------------------------------------------------------------------------------------------
// RawServer, RawNet, RefusedPort

RawServer::RawServer(uv_loop_t* loop, RawNet& net) : net_(net) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
  sockaddr_in addr = loopback(0);
  EXPECT_EQ(uv_tcp_bind(&tcp_, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  EXPECT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 64, on_connection_cb), 0);
  port_ = bound_port(&tcp_);
}

void RawServer::on_connection_cb(uv_stream_t* s, int status) {
  auto* self = static_cast<RawServer*>(s->data);
  if (status != 0) return;
  RawConn& c = self->net_.conn();
  if (uv_accept(s, reinterpret_cast<uv_stream_t*>(c.tcp())) != 0) {
    c.close();
    return;
  }
  c.connect_status = 0;
  self->conns.push_back(&c);
  if (self->on_accept) self->on_accept(c);
  c.start_reading();
}

void RawServer::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

RawConn& RawNet::conn() {
  conns_.push_back(std::make_unique<RawConn>(loop_));
  return *conns_.back();
}

RawServer& RawNet::server() {
  servers_.push_back(std::make_unique<RawServer>(loop_, *this));
  return *servers_.back();
}

void RawNet::close_all() {
  for (auto& s : servers_) s->close();
  for (auto& c : conns_) c->close();
}

StreamAcceptor::StreamAcceptor(uv_loop_t* loop, BufferPool* buffers) : loop_(loop), buffers_(buffers) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
  sockaddr_in addr = loopback(0);
  EXPECT_EQ(uv_tcp_bind(&tcp_, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  EXPECT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&tcp_), 64, on_connection_cb), 0);
  port_ = bound_port(&tcp_);
}

void StreamAcceptor::on_connection_cb(uv_stream_t* s, int status) {
  auto* self = static_cast<StreamAcceptor*>(s->data);
  if (status != 0) return;
  auto* stream = new net::Stream(self->loop_, self->buffers_);
  if (uv_accept(s, stream->uv()) != 0) {
    stream->close();
    return;
  }
  stream->set_delegate(self->delegate);
  stream->accepted();
  stream->start_reading();
  self->streams.push_back(stream);
}

void StreamAcceptor::close() {
  if (closed_) return;
  closed_ = true;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), nullptr);
}

FakeBackend::FakeBackend(RawNet& net) : server(net.server()) {
  respond = [](RawConn&, const RawMessage& m) -> std::optional<std::string> { return ok(m.target); };
  server.on_accept = [this](RawConn& c) { c.on_data = [this](RawConn& conn, std::string_view) { on_data(conn); }; };
}

std::string FakeBackend::ok(std::string_view body, std::string_view extra_headers) {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + std::string(extra_headers) +
         "\r\n" + std::string(body);
}

void FakeBackend::on_data(RawConn& c) {
  while (std::find(raw.begin(), raw.end(), &c) == raw.end()) {
    auto m = read_message(c.in, false);
    if (!m) return;
    c.in.erase(0, m->size);
    requests.push_back(*m);
    request_conns.push_back(&c);
    if (auto answer = respond(c, *m)) c.write(std::move(*answer));
  }
}

RefusedPort::RefusedPort() {
  fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = loopback(0);
  EXPECT_EQ(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
}

RefusedPort::~RefusedPort() {
  if (fd_ >= 0) ::close(fd_);
}

// ---------------------------------------------------------------------------------------------
// Hand-written HTTP reading

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::string> RawMessage::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return value;
  }
  return std::nullopt;
}

std::optional<RawMessage> read_message(std::string_view in, bool response, bool eof) {
  size_t head_end = in.find("\r\n\r\n");
  if (head_end == std::string_view::npos) return std::nullopt;
  RawMessage m;
  m.head = std::string(in.substr(0, head_end + 4));
  std::string_view head = in.substr(0, head_end + 2);
  size_t line_end = head.find("\r\n");
  m.start_line = std::string(head.substr(0, line_end));
  if (response) {
    m.status = std::atoi(m.start_line.c_str() + 9);
  } else {
    size_t sp1 = m.start_line.find(' ');
    size_t sp2 = m.start_line.find(' ', sp1 + 1);
    m.method = m.start_line.substr(0, sp1);
    m.target = m.start_line.substr(sp1 + 1, sp2 - sp1 - 1);
  }
  size_t pos = line_end + 2;
  while (pos < head.size()) {
    size_t end = head.find("\r\n", pos);
    std::string_view line = head.substr(pos, end - pos);
    size_t colon = line.find(':');
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    m.headers.emplace_back(to_lower(line.substr(0, colon)), std::string(value));
    pos = end + 2;
  }
  size_t at = head_end + 4;
  auto te = m.header("transfer-encoding");
  auto cl = m.header("content-length");
  bool no_body = response && (m.status / 100 == 1 || m.status == 204 || m.status == 304);
  if (no_body) {
    m.size = at;
  } else if (te && to_lower(*te).find("chunked") != std::string::npos) {
    for (;;) {
      size_t size_end = in.find("\r\n", at);
      if (size_end == std::string_view::npos) return std::nullopt;
      size_t n = std::strtoul(std::string(in.substr(at, size_end - at)).c_str(), nullptr, 16);
      if (n == 0) {
        if (in.size() < size_end + 4) return std::nullopt;
        if (in.substr(size_end + 2, 2) != "\r\n") return std::nullopt;  // no trailers in these tests
        m.size = size_end + 4;
        break;
      }
      if (in.size() < size_end + 2 + n + 2) return std::nullopt;
      m.body.append(in.substr(size_end + 2, n));
      at = size_end + 2 + n + 2;
    }
  } else if (cl) {
    size_t n = std::strtoul(cl->c_str(), nullptr, 10);
    if (in.size() < at + n) return std::nullopt;
    m.body = std::string(in.substr(at, n));
    m.size = at + n;
  } else if (!response) {
    m.size = at;
  } else {
    if (!eof) return std::nullopt;
    m.body = std::string(in.substr(at));
    m.size = in.size();
  }
  m.raw = std::string(in.substr(0, m.size));
  return m;
}

std::vector<RawMessage> take_messages(std::string& in, bool response, bool eof) {
  std::vector<RawMessage> out;
  while (auto m = read_message(in, response, eof)) {
    in.erase(0, m->size);
    out.push_back(std::move(*m));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Hand-written WebSocket frames

uint16_t WsFrame::close_code() const {
  if (payload.size() < 2) return 0;
  return static_cast<uint16_t>((static_cast<uint8_t>(payload[0]) << 8) | static_cast<uint8_t>(payload[1]));
}

std::string ws_frame(uint8_t opcode, std::string_view payload, bool masked, uint32_t mask, bool fin) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  const uint8_t m = masked ? 0x80 : 0;
  if (payload.size() < 126) {
    f.push_back(static_cast<char>(m | payload.size()));
  } else if (payload.size() < 65536) {
    f.push_back(static_cast<char>(m | 126));
    f.push_back(static_cast<char>(payload.size() >> 8));
    f.push_back(static_cast<char>(payload.size() & 0xff));
  } else {
    f.push_back(static_cast<char>(m | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((static_cast<uint64_t>(payload.size()) >> (8 * i)) & 0xff));
  }
  uint8_t key[4] = {static_cast<uint8_t>(mask >> 24), static_cast<uint8_t>(mask >> 16),
                    static_cast<uint8_t>(mask >> 8), static_cast<uint8_t>(mask)};
  if (masked) f.append(reinterpret_cast<const char*>(key), 4);
  for (size_t i = 0; i < payload.size(); ++i) {
    f.push_back(masked ? static_cast<char>(payload[i] ^ static_cast<char>(key[i % 4])) : payload[i]);
  }
  return f;
}

std::vector<WsFrame> read_frames(std::string_view in, size_t* consumed) {
  std::vector<WsFrame> out;
  size_t at = 0;
  for (;;) {
    if (in.size() < at + 2) break;
    const auto b0 = static_cast<uint8_t>(in[at]);
    const auto b1 = static_cast<uint8_t>(in[at + 1]);
    size_t pos = at + 2;
    uint64_t len = b1 & 0x7f;
    if (len == 126) {
      if (in.size() < pos + 2) break;
      len = (static_cast<uint64_t>(static_cast<uint8_t>(in[pos])) << 8) | static_cast<uint8_t>(in[pos + 1]);
      pos += 2;
    } else if (len == 127) {
      if (in.size() < pos + 8) break;
      len = 0;
      for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<uint8_t>(in[pos + static_cast<size_t>(i)]);
      pos += 8;
    }
    const bool masked = (b1 & 0x80) != 0;
    uint8_t key[4] = {};
    if (masked) {
      if (in.size() < pos + 4) break;
      std::memcpy(key, in.data() + pos, 4);
      pos += 4;
    }
    if (in.size() < pos + len) break;
    WsFrame f;
    f.fin = (b0 & 0x80) != 0;
    f.opcode = b0 & 0x0f;
    f.masked = masked;
    f.payload = std::string(in.substr(pos, len));
    if (masked) {
      for (size_t i = 0; i < f.payload.size(); ++i) f.payload[i] = static_cast<char>(f.payload[i] ^ static_cast<char>(key[i % 4]));
    }
    f.size = pos + len - at;
    at = pos + len;
    out.push_back(std::move(f));
  }
  if (consumed != nullptr) *consumed = at;
  return out;
}

// ---------------------------------------------------------------------------------------------
// LoopTest

LoopTest::LoopTest() {
  uv_loop_init(&loop_);
  uv_timer_init(&loop_, &guard_);
  guard_.data = this;
  own_handles_.push_back(reinterpret_cast<const uv_handle_t*>(&guard_));
}

void LoopTest::SetUp() {
  // As the daemon does: a write to a peer that is gone is an EPIPE to handle, not a signal.
  std::signal(SIGPIPE, SIG_IGN);
  // Quiet unless asked: LIMPET_TEST_LOG=debug|info|warn shows the proxy's own log.
  log::Level level = log::Level::kError;
  if (const char* env = std::getenv("LIMPET_TEST_LOG")) log::parse_level(env, &level);
  log::set_level(level);
  std::string error;
  log::open_access(std::getenv("LIMPET_TEST_LOG") != nullptr ? "stderr" : "off", &error);
}

bool LoopTest::run_until(const std::function<bool()>& done, uint64_t timeout_ms) {
  expired_ = false;
  uv_timer_start(
      &guard_, [](uv_timer_t* t) { static_cast<LoopTest*>(t->data)->expired_ = true; }, timeout_ms, 0);
  while (!done() && !expired_) uv_run(&loop_, UV_RUN_ONCE);
  uv_timer_stop(&guard_);
  return done();
}

std::vector<std::string> LoopTest::open_handles() {
  struct Walk {
    LoopTest* self;
    std::vector<std::string> found;
  } walk{this, {}};
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void* arg) {
        auto* w = static_cast<Walk*>(arg);
        const auto& own = w->self->own_handles_;
        if (std::find(own.begin(), own.end(), h) != own.end()) return;
        w->found.push_back(std::string(handle_type(h)) + (uv_is_closing(h) ? " (closing)" : ""));
      },
      &walk);
  return walk.found;
}

bool LoopTest::quiet() { return open_handles().empty(); }

void LoopTest::TearDown() {
  release();
  // The peers go first: whatever limpet still holds must close by itself on their EOF.
  net_.close_all();
  bool clean = run_until([&] { return quiet(); });
  std::vector<std::string> left = open_handles();
  EXPECT_TRUE(clean && left.empty()) << "handles still open at the end of the test: " << left.size()
                                     << (left.empty() ? std::string() : " (first: " + left.front() + ")");
  if (!left.empty()) {
    // Close them anyway so that the loop can be closed and the next test starts clean.
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void* arg) {
          auto* self = static_cast<LoopTest*>(arg);
          const auto& own = self->own_handles_;
          if (std::find(own.begin(), own.end(), h) == own.end() && !uv_is_closing(h)) uv_close(h, nullptr);
        },
        this);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  close_own();
  uv_close(reinterpret_cast<uv_handle_t*>(&guard_), nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  EXPECT_EQ(uv_loop_close(&loop_), 0);
}

// ---------------------------------------------------------------------------------------------
// ProxyTest

ProxyTest::ProxyTest() {
  ucfg_.name = "app";
  ucfg_.health.max_fails = 3;
  lcfg_.name = "web";
  lcfg_.upstream = "app";
  affinity_ = std::make_shared<balancer::AffinityTable>(registry_, 0, clock_);
  worker_.loop = &loop_;
}

void ProxyTest::SetUp() {
  LoopTest::SetUp();
  worker_.graveyard.init(&loop_);
  // The graveyard's check handle is the worker's, not a connection's: it lives as long as the worker.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void* arg) {
        auto* self = static_cast<ProxyTest*>(arg);
        if (uv_handle_get_type(h) == UV_CHECK) self->own_handles_.push_back(h);
      },
      this);
}

void ProxyTest::add_backend(std::string name, uint16_t port) {
  config::BackendConfig b;
  b.name = std::move(name);
  b.address.host = "127.0.0.1";
  b.address.port = port;
  b.address.text = "127.0.0.1:" + std::to_string(port);
  ucfg_.backends.push_back(std::move(b));
}

void ProxyTest::build() {
  auto built = balancer::Upstream::build(ucfg_, registry_, affinity_, clock_);
  ASSERT_TRUE(built.is_ok()) << (built.is_ok() ? "" : built.message());
  upstream_ = *built;
  listener_ = std::make_shared<ListenerContext>();
  listener_->config = &lcfg_;
  listener_->upstream = upstream_.get();
  listener_->open_connections = std::make_shared<uint32_t>(0);
  listener_->counters = &listener_counters_;
}

FakeBackend& ProxyTest::backend(std::string name) {
  backends_.push_back(std::make_unique<FakeBackend>(net_));
  add_backend(std::move(name), backends_.back()->port());
  return *backends_.back();
}

size_t ProxyTest::settled_conns(RawServer& server) {
  RawConn& probe = net_.conn();
  probe.connect(server.port());
  auto probe_accepted = [&] {
    if (probe.connect_status == 1) return false;
    for (RawConn* c : server.conns) {
      if (c->remote_port() == probe.local_port()) return true;
    }
    return false;
  };
  EXPECT_TRUE(run_until(probe_accepted)) << "probe connection not accepted";
  size_t n = 0;
  RawConn* accepted_probe = nullptr;
  for (RawConn* c : server.conns) {
    if (c->remote_port() == probe.local_port()) {
      accepted_probe = c;
    } else {
      ++n;
    }
  }
  if (accepted_probe != nullptr) {
    server.conns.erase(std::find(server.conns.begin(), server.conns.end(), accepted_probe));
    accepted_probe->close();
  }
  probe.close();
  return n;
}

uint16_t ProxyTest::listen() {
  uv_tcp_init(&loop_, &listen_tcp_);
  listen_tcp_.data = this;
  listening_ = true;
  sockaddr_in addr = loopback(0);
  EXPECT_EQ(uv_tcp_bind(&listen_tcp_, reinterpret_cast<const sockaddr*>(&addr), 0), 0);
  EXPECT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listen_tcp_), 64,
                      [](uv_stream_t* s, int status) {
                        auto* self = static_cast<ProxyTest*>(s->data);
                        if (status != 0) return;
                        auto* stream = new net::Stream(&self->loop_, &self->worker_.buffers);
                        if (uv_accept(s, stream->uv()) != 0) {
                          stream->close();
                          return;
                        }
                        ClientConnection::start(&self->worker_, self->listener_, stream);
                      }),
            0);
  listen_port_ = bound_port(&listen_tcp_);
  return listen_port_;
}

RawConn& ProxyTest::client() {
  RawConn& c = net_.conn();
  c.connect(listen_port_);
  return c;
}

int64_t ProxyTest::total_in_flight() const {
  int64_t n = 0;
  for (const auto& b : upstream_->backends()) n += b.state->in_flight.load();
  return n;
}

namespace {

template <class List>
std::vector<ClientConnection*> list_of(const List& list) {
  if constexpr (requires { list.snapshot(); }) {
    return list.snapshot();
  } else {
    return std::vector<ClientConnection*>(list.begin(), list.end());
  }
}

template <class C>
void sweep_one(C* c, uint64_t now_ms) {
  if constexpr (requires { c->sweep_idle(now_ms); }) c->sweep_idle(now_ms);
}

}  // namespace

std::vector<ClientConnection*> ProxyTest::connections() const { return list_of(worker_.connections); }

ClientConnection* ProxyTest::only_connection() const {
  auto all = connections();
  return all.size() == 1 ? all.front() : nullptr;
}

void ProxyTest::start_sweeper(uint64_t every_ms) {
  if (sweeper_started_) return;
  sweeper_started_ = true;
  uv_timer_init(&loop_, &sweeper_);
  sweeper_.data = this;
  own_handles_.push_back(reinterpret_cast<const uv_handle_t*>(&sweeper_));
  uv_timer_start(
      &sweeper_,
      [](uv_timer_t* t) {
        auto* self = static_cast<ProxyTest*>(t->data);
        for (ClientConnection* c : self->connections()) sweep_one(c, uv_now(t->loop));
      },
      every_ms, every_ms);
}

void ProxyTest::release() {
  if (listening_) {
    listening_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&listen_tcp_), nullptr);
  }
}

void ProxyTest::close_own() {
  if (sweeper_started_) {
    sweeper_started_ = false;
    uv_close(reinterpret_cast<uv_handle_t*>(&sweeper_), nullptr);
  }
  worker_.pool.close_all();
  worker_.graveyard.close();
}

void ProxyTest::TearDown() {
  LoopTest::TearDown();
  // No read buffer is still borrowed: an idle or closed connection holds none.
  EXPECT_EQ(worker_.buffers.outstanding(), 0u);
}

bool ProxyTest::quiet() {
  return worker_.connections.size() == 0 && worker_.pool.idle_count() == 0 && LoopTest::quiet();
}

}  // namespace limpet::proxy::testing
