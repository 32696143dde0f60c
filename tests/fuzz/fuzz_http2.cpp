// The HTTP/2 session (proxy/http2_session) as a client reaches it: a real cleartext listener with
// http2 = true on a uv loop, ClientConnection::start for each accepted connection, the Exchange
// and Tunnel behind it, and a backend on the same loop that answers every request head with a
// small 200 (a 101 to a WebSocket upgrade, then echoes). One input is one client connection:
// the HTTP/2 client preface, then the input's bytes as the client's frames (input byte 0 picks
// how they are cut into writes), read from until the loop is quiet, then closed.
// Checked:
//  - no crash, no sanitizer report (nghttp2 callbacks, stream lifetime, the graveyard);
//  - limpet answers only with well-formed HTTP/2 frames: its bytes split into frames whose
//    lengths add up exactly (a torn or garbage write would not);
//  - once the client has closed, its connection and every stream, exchange and tunnel of it are
//    gone within a bounded number of loop turns (no connection left open by a stuck stream).
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/config/config.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/client_connection.hpp"
#include "limpet/proxy/context.hpp"
#include "limpet/util/clock.hpp"
#include "limpet/util/log.hpp"

namespace limpet::fuzz {
namespace {

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr int kMaxTurns = 2000;  // loop turns for an input to settle, and for its close

uint16_t bound_port(uv_tcp_t* tcp) {
  sockaddr_storage addr{};
  int len = sizeof addr;
  uv_tcp_getsockname(tcp, reinterpret_cast<sockaddr*>(&addr), &len);
  return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

void listen_on_loopback(uv_loop_t* loop, uv_tcp_t* tcp, uv_connection_cb on_connection) {
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(loop, tcp);
  uv_tcp_bind(tcp, reinterpret_cast<const sockaddr*>(&addr), 0);
  uv_listen(reinterpret_cast<uv_stream_t*>(tcp), 128, on_connection);
}

// The backend: answers each request head with a 200 of 5 bytes; an upgrade gets a 101 and its
// bytes are echoed from then on. Just enough HTTP/1.1 for limpet's parser to accept.
struct BackendConn {
  uv_tcp_t tcp{};
  std::string in;
  bool upgraded = false;
};

void backend_write(BackendConn* c, std::string_view data) {
  auto* req = new uv_write_t;
  auto* copy = new std::string(data);
  req->data = copy;
  uv_buf_t buf = uv_buf_init(copy->data(), static_cast<unsigned>(copy->size()));
  if (uv_write(req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1, [](uv_write_t* r, int) {
        delete static_cast<std::string*>(r->data);
        delete r;
      }) != 0) {
    delete copy;
    delete req;
  }
}

void backend_close(BackendConn* c) {
  if (uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) { delete static_cast<BackendConn*>(h->data); });
}

void backend_on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<BackendConn*>(s->data);
  if (n < 0) {
    backend_close(c);
  } else if (c->upgraded) {
    backend_write(c, std::string_view(buf->base, static_cast<size_t>(n)));
  } else {
    c->in.append(buf->base, static_cast<size_t>(n));
    for (size_t end; !c->upgraded && (end = c->in.find("\r\n\r\n")) != std::string::npos;) {
      const std::string head = c->in.substr(0, end);
      c->in.erase(0, end + 4);
      if (head.find("Upgrade: websocket") != std::string::npos) {
        c->upgraded = true;
        backend_write(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        if (!c->in.empty()) backend_write(c, c->in);
        c->in.clear();
      } else {
        // A body, if any, is read as the next "head" and ignored: limpet frames it, and a
        // response before the body is legal (and what this backend tests).
        backend_write(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
      }
    }
  }
  delete[] buf->base;
}

struct Fixture {
  uv_loop_t loop{};
  uv_tcp_t backend_listener{};
  uv_tcp_t limpet_listener{};
  proxy::WorkerContext worker;
  config::UpstreamConfig upstream_config;
  config::ListenerConfig listener_config;
  balancer::BackendRegistry registry;
  limpet::ManualClock clock{1000000};
  std::shared_ptr<balancer::AffinityTable> affinity;
  std::shared_ptr<const balancer::Upstream> upstream;
  std::shared_ptr<proxy::ListenerContext> listener;
  proxy::ListenerCounters listener_counters;
  uint16_t port = 0;

  Fixture() {
    log::set_level(log::Level::kError);
    // As the server does (runtime/server.cpp): libuv writes with write(2), and a write to a peer
    // that has closed (limpet to the client, the backend to limpet) must be EPIPE, not a SIGPIPE
    // that kills the fuzzer with exit 141 and no report.
    std::signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    worker.loop = &loop;
    worker.graveyard.init(&loop);
    listen_on_loopback(&loop, &backend_listener, [](uv_stream_t* server, int status) {
      if (status != 0) return;
      auto* c = new BackendConn;
      uv_tcp_init(server->loop, &c->tcp);
      c->tcp.data = c;
      if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
        backend_close(c);
        return;
      }
      uv_read_start(
          reinterpret_cast<uv_stream_t*>(&c->tcp),
          [](uv_handle_t*, size_t size, uv_buf_t* buf) { *buf = uv_buf_init(new char[size], static_cast<unsigned>(size)); },
          backend_on_read);
    });
    upstream_config.name = "app";
    upstream_config.engineio_paths = {"/socket.io/"};
    config::BackendConfig b;
    b.name = "b1";
    b.address.host = "127.0.0.1";
    b.address.port = bound_port(&backend_listener);
    b.address.text = "127.0.0.1:" + std::to_string(b.address.port);
    upstream_config.backends.push_back(b);
    listener_config.name = "h2";
    listener_config.upstream = "app";
    listener_config.http2 = true;
    listener_config.http2_max_streams = 16;
    listener_config.max_header_size = 4096;
    listener_config.max_body_size = 64 * 1024;
    affinity = std::make_shared<balancer::AffinityTable>(registry, 0, clock);
    auto built = balancer::Upstream::build(upstream_config, registry, affinity, clock);
    FUZZ_CHECK(built.is_ok(), built.is_ok() ? "" : built.message());
    upstream = *built;
    listener = std::make_shared<proxy::ListenerContext>();
    listener->config = &listener_config;
    listener->upstream = upstream.get();
    listener->open_connections = std::make_shared<uint32_t>(0);
    listener->counters = &listener_counters;
    limpet_listener.data = this;
    listen_on_loopback(&loop, &limpet_listener, [](uv_stream_t* server, int status) {
      auto* self = static_cast<Fixture*>(server->data);
      if (status != 0) return;
      auto* stream = new net::Stream(&self->loop, &self->worker.buffers);
      if (uv_accept(server, stream->uv()) != 0) {
        stream->close();
        return;
      }
      proxy::ClientConnection::start(&self->worker, self->listener, stream);
    });
    port = bound_port(&limpet_listener);
  }
};

Fixture& fixture() {
  static Fixture* f = new Fixture();  // lives as long as the process: the loop never closes
  return *f;
}

// Frames limpet sent: each a 9-byte header and its length; false if the bytes do not end at a
// frame boundary once the connection is done.
bool whole_frames(std::string_view bytes) {
  size_t at = 0;
  while (bytes.size() - at >= 9) {
    const size_t length = (static_cast<uint8_t>(bytes[at]) << 16) | (static_cast<uint8_t>(bytes[at + 1]) << 8) |
                          static_cast<uint8_t>(bytes[at + 2]);
    if (bytes.size() - at < 9 + length) return false;
    at += 9 + length;
  }
  return at == bytes.size();
}

void drain(int fd, std::string* received) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n <= 0) return;
    received->append(buf, static_cast<size_t>(n));
  }
}

// A blocking connect to limpet's listener. On loopback it returns at once, except when the new
// connection's port pair still has a TIME_WAIT socket on limpet's side (tens of thousands of
// inputs reuse the ports): the first SYN is answered with the old connection's ACK and the SYN
// is sent again a second later. libFuzzer's alarm (its -timeout check, every second) can cut that
// wait short with EINTR while the connect goes on in the kernel: then wait for it to finish.
bool connect_to(int fd, const sockaddr_in& addr) {
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) return true;
  if (errno != EINTR) return false;
  pollfd p{fd, POLLOUT, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, 5000);
  } while (ready < 0 && errno == EINTR);
  int error = 0;
  socklen_t length = sizeof error;
  if (ready == 0) errno = ETIMEDOUT;
  if (ready != 1 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) != 0) return false;
  errno = error;
  return error == 0;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet::fuzz;
  using limpet::fuzz::escape;
  Fixture& f = fixture();
  const uint8_t cut = size > 0 ? data[0] : 0;
  const std::string_view frames(reinterpret_cast<const char*>(data) + (size > 0 ? 1 : 0), size > 0 ? size - 1 : 0);

  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", f.port, &addr);
  FUZZ_CHECK(connect_to(fd, addr), std::strerror(errno));
  ::fcntl(fd, F_SETFL, O_NONBLOCK);
  std::string received;
  std::string out(kPreface);
  out.append(frames);
  // Cut into writes of 1 to 256 bytes (byte 0 = 0: one write), each followed by loop turns.
  const size_t piece = cut == 0 ? out.size() : cut;
  for (size_t at = 0; at < out.size();) {
    const ssize_t n = ::send(fd, out.data() + at, std::min(piece, out.size() - at), MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) break;  // limpet closed the connection
    if (n > 0) at += static_cast<size_t>(n);
    uv_run(&f.loop, UV_RUN_NOWAIT);
    drain(fd, &received);
  }
  // Until nothing moves for a while: the backend's answers, the responses, the frames.
  for (int idle = 0, turn = 0; idle < 50 && turn < kMaxTurns; ++turn) {
    const size_t before = received.size();
    uv_run(&f.loop, UV_RUN_NOWAIT);
    drain(fd, &received);
    idle = received.size() == before ? idle + 1 : 0;
  }
  ::shutdown(fd, SHUT_WR);
  for (int turn = 0; turn < kMaxTurns && f.worker.connections.size() > 0; ++turn) {
    uv_run(&f.loop, UV_RUN_NOWAIT);
    drain(fd, &received);
  }
  ::close(fd);
  FUZZ_CHECK(f.worker.connections.size() == 0,
             "a closed client's connection is still open after " + std::to_string(kMaxTurns) + " loop turns");
  FUZZ_CHECK(whole_frames(received), "limpet's bytes are not whole HTTP/2 frames: " + escape(received, 200));
  uv_run(&f.loop, UV_RUN_NOWAIT);  // the graveyard
  return 0;
}
