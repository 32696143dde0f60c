// HttpSession behind ClientConnection::start, with a real accepted client stream: a raw client
// writes hand-written requests to a limpet listener on 127.0.0.1 and reads what comes back with
// the test's own reader; the backends are raw sockets too.
#include "limpet/proxy/http_session.hpp"

#include <gtest/gtest.h>

#include "harness.hpp"
#include "limpet/proxy/client_connection.hpp"

namespace limpet::proxy::testing {
namespace {

class HttpSessionTest : public ProxyTest {
 protected:
  // Responses complete at the front of `c.in` (without taking them off).
  static std::vector<RawMessage> responses(const RawConn& c) {
    std::string in = c.in;
    return take_messages(in, true, c.eof);
  }
};

TEST_F(HttpSessionTest, KeepAliveRequestThenTwoPipelinedOnes) {
  FakeBackend& a = backend("a");
  build();
  listen();
  RawConn& c = client();
  c.write("GET /one HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  EXPECT_EQ(responses(c)[0].status, 200);
  EXPECT_EQ(responses(c)[0].body, "/one");
  EXPECT_FALSE(responses(c)[0].header("connection").has_value());

  // Two requests in one write: answered one at a time, in order, on the pooled connection.
  c.write("GET /two HTTP/1.1\r\nHost: example.test\r\n\r\nGET /three HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 3; }));
  auto all = responses(c);
  EXPECT_EQ(all[1].body, "/two");
  EXPECT_EQ(all[2].body, "/three");
  ASSERT_EQ(a.requests.size(), 3u);
  EXPECT_EQ(a.requests[1].target, "/two");
  EXPECT_EQ(a.requests[2].target, "/three");
  EXPECT_EQ(settled_conns(a.server), 1u);  // one upstream connection for all three
  EXPECT_EQ(worker_.counters.requests.load(), 3u);
  EXPECT_EQ(worker_.counters.responses_by_class[2].load(), 3u);
  EXPECT_FALSE(c.eof);  // still open for the next one
  EXPECT_EQ(open_count(), 1u);
  EXPECT_EQ(total_in_flight(), 0);

  // The client leaves: its connection goes, the pooled one stays until the backend closes it.
  c.close();
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
  EXPECT_EQ(*listener_->open_connections, 0u);
}

TEST_F(HttpSessionTest, MissingHostIs400AndTheConnectionCloses) {
  FakeBackend& a = backend("a");
  build();
  listen();
  RawConn& c = client();
  c.write("GET / HTTP/1.1\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  auto r = responses(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 400);
  EXPECT_EQ(r[0].header("connection"), "close");
  // Lingering: limpet closes once the client is done too.
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
  EXPECT_EQ(settled_conns(a.server), 0u);
  EXPECT_EQ(worker_.counters.responses_by_class[4].load(), 1u);
}

TEST_F(HttpSessionTest, Http10WithoutHostIsServed) {
  FakeBackend& a = backend("a");
  build();
  listen();
  RawConn& c = client();
  c.write("GET /old HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  auto r = responses(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[0].body, "/old");
  EXPECT_EQ(a.requests.size(), 1u);
}

// Clients that stall mid-upload are answered 408 and closed; the backend, which read everything
// it was sent, is not blamed: no failure is counted and it stays up for the next request.
TEST_F(HttpSessionTest, StalledBodiesAre408AndNeverCountAgainstTheBackend) {
  FakeBackend& a = backend("a");
  lcfg_.body_timeout = std::chrono::milliseconds(100);
  ucfg_.health.max_fails = 3;
  build();
  listen();
  std::vector<RawConn*> stalled;
  for (int i = 0; i < 4; ++i) {
    RawConn& c = client();
    c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1000\r\n\r\n0123456789");
    stalled.push_back(&c);
  }
  for (RawConn* c : stalled) {
    ASSERT_TRUE(run_until([&] { return c->eof; }));
    auto r = responses(*c);
    ASSERT_EQ(r.size(), 1u);
    EXPECT_EQ(r[0].status, 408);
    c->shutdown();
  }
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
  EXPECT_EQ(state(0).failures.load(), 0u);
  EXPECT_TRUE(state(0).up.load());
  EXPECT_EQ(total_in_flight(), 0);
  // The backend connections carrying the cut-short uploads are closed, not pooled.
  for (RawConn* up : a.server.conns) {
    ASSERT_TRUE(run_until([&] { return up->eof || up->read_error != 0; }));
  }
  EXPECT_EQ(worker_.pool.idle_count(), 0u);

  RawConn& next = client();
  next.write("GET /after HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(next).size() == 1; }));
  EXPECT_EQ(responses(next)[0].status, 200);
}

TEST_F(HttpSessionTest, DeclaredBodyOverTheLimitIs413BeforeAnythingIsSent) {
  FakeBackend& a = backend("a");
  lcfg_.max_body_size = 100;
  build();
  listen();
  RawConn& c = client();
  c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nContent-Length: 1000\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  EXPECT_EQ(responses(c)[0].status, 413);
  EXPECT_EQ(responses(c)[0].header("connection"), "close");
  EXPECT_EQ(settled_conns(a.server), 0u);
}

// A chunked body has no declared size: it is cut when it passes the limit, after the exchange
// began; the upstream connection is dropped and the backend is not blamed.
TEST_F(HttpSessionTest, ChunkedBodyOverTheLimitIs413) {
  FakeBackend& a = backend("a");
  lcfg_.max_body_size = 100;
  build();
  listen();
  RawConn& c = client();
  std::string chunk = "40\r\n" + std::string(64, 'x') + "\r\n";
  c.write("POST /upload HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk);
  ASSERT_TRUE(run_until([&] { return a.server.conns.size() == 1 && a.server.conns[0]->in.size() > 64; }));
  c.write(chunk);
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  EXPECT_EQ(responses(c)[0].status, 413);
  RawConn* up = a.server.conns[0];
  ASSERT_TRUE(run_until([&] { return up->eof || up->read_error != 0; }));
  EXPECT_TRUE(a.requests.empty());  // it never got a complete request
  EXPECT_EQ(state(0).failures.load(), 0u);
  EXPECT_EQ(total_in_flight(), 0);
}

// A backend that echoes the request body while it is still reading it (streaming endpoints):
// 64 MiB each way, both sides flow-controlled, through limpet at the same time (the first proxy
// core stalled after about 4 MiB: it resumed the backend on the backend's queue, not the client's).
TEST_F(HttpSessionTest, FullDuplexEchoOf64MiBCompletes) {
  constexpr uint64_t kBody = 64ull << 20;
  FakeBackend& a = backend("a");
  a.server.on_accept = [&](RawConn& up) {
    up.accumulate = false;
    up.on_data = [&, started = false, head = std::string()](RawConn& conn, std::string_view data) mutable {
      if (!started) {
        head.append(data);
        size_t end = head.find("\r\n\r\n");
        if (end == std::string::npos) return;
        started = true;
        conn.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kBody) + "\r\n\r\n");
        data = std::string_view(head).substr(end + 4);
        if (data.empty()) return;
        conn.write(std::string(data));
        return;
      }
      conn.write(std::string(data));
      // A real echo server's backpressure: it stops reading while its output is not taken.
      if (conn.write_pending > (1 << 20)) conn.stop_reading();
    };
    up.on_written = [](RawConn& conn) {
      if (conn.write_pending < (256 << 10)) conn.start_reading();
    };
  };
  lcfg_.max_body_size = 0;  // unlimited: the default (16 MiB) would answer 413
  build();
  listen();
  RawConn& c = client();
  c.accumulate = false;
  std::string head_in;
  bool head_done = false;
  uint64_t echoed = 0;
  bool in_order = true;
  c.on_data = [&](RawConn&, std::string_view data) {
    if (!head_done) {
      head_in.append(data);
      size_t end = head_in.find("\r\n\r\n");
      if (end == std::string::npos) return;
      head_done = true;
      data = std::string_view(head_in).substr(end + 4);
    }
    if (pattern_mismatch(data, echoed) != std::string_view::npos) in_order = false;
    echoed += data.size();
  };
  c.write("POST /echo HTTP/1.1\r\nHost: example.test\r\nContent-Length: " + std::to_string(kBody) + "\r\n\r\n");
  c.pump(kBody);
  ASSERT_TRUE(run_until([&] { return echoed == kBody; }, 60000))
      << "echoed " << echoed << " of " << kBody << ", sent " << c.bytes_written << ", response "
      << head_in.substr(0, head_in.find('\r'));
  EXPECT_TRUE(in_order);
  EXPECT_EQ(head_in.substr(0, 15), "HTTP/1.1 200 OK");
  EXPECT_EQ(state(0).failures.load(), 0u);
  ASSERT_TRUE(run_until([&] { return total_in_flight() == 0; }));
}

// A response without a length goes to an HTTP/1.1 client chunked, and the connection stays.
TEST_F(HttpSessionTest, UntilCloseResponseIsChunkedForTheClient) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    c.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstreamed body");
    c.shutdown();
    return std::nullopt;
  };
  build();
  listen();
  RawConn& c = client();
  c.write("GET /stream HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  auto r = responses(c)[0];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.body, "streamed body");
}

// The backend is gone: 502 for the client, the failure counted against the backend.
TEST_F(HttpSessionTest, UnreachableBackendIs502) {
  RefusedPort refused;
  add_backend("a", refused.port());
  ucfg_.max_tries = 1;
  build();
  listen();
  RawConn& c = client();
  c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  EXPECT_EQ(responses(c)[0].status, 502);
  EXPECT_EQ(state(0).failures.load(), 1u);
  EXPECT_EQ(total_in_flight(), 0);
}

// With ignore_client_abort, a client that half-closes after a complete request still gets its
// answer, then the close.
TEST_F(HttpSessionTest, HalfClosedClientIsAnsweredThenClosedWithIgnoreClientAbort) {
  backend("a");
  lcfg_.ignore_client_abort = true;
  build();
  listen();
  RawConn& c = client();
  c.write("GET /bye HTTP/1.1\r\nHost: example.test\r\n\r\n");
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  auto r = responses(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].body, "/bye");
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
}

// By default (nginx's), a client EOF while the backend works on its request aborts it: the
// backend connection is closed at once, never pooled, and the backend's in-flight count is back.
TEST_F(HttpSessionTest, ClientEofWhileTheBackendWorksAbortsTheExchange) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  build();
  listen();
  RawConn& c = client();
  c.write("GET /socket.io/?EIO=4&transport=polling&sid=s1 HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1 && total_in_flight() == 1; }));
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return c.eof && a.request_conns[0]->eof; }));
  EXPECT_TRUE(c.in.empty());  // no answer: the client is gone
  EXPECT_EQ(total_in_flight(), 0);
  EXPECT_EQ(worker_.counters.client_aborts.load(), 1u);
  EXPECT_EQ(worker_.pool.idle_count(), 0u);
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
}

TEST_F(HttpSessionTest, IdleKeepAliveConnectionIsClosed) {
  backend("a");
  lcfg_.keepalive_timeout = std::chrono::milliseconds(100);
  build();
  listen();
  RawConn& c = client();
  c.write("GET / HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 1; }));
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }));
}

TEST_F(HttpSessionTest, StalledHeadIs408) {
  FakeBackend& a = backend("a");
  lcfg_.header_timeout = std::chrono::milliseconds(100);
  build();
  listen();
  RawConn& c = client();
  c.write("GET / HTTP/1.1\r\nHost: exa");
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  auto r = responses(c);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 408);
  EXPECT_EQ(settled_conns(a.server), 0u);
}

// A pipelined request refused after one that was served still gets its 400 (the last response's
// state must not make it look like a response in progress).
TEST_F(HttpSessionTest, ABadRequestAfterAServedOneIsAnswered) {
  FakeBackend& a = backend("a");
  build();
  listen();
  RawConn& c = client();
  c.write("GET /one HTTP/1.1\r\nHost: example.test\r\n\r\n"
          "POST /two HTTP/1.1\r\nHost: example.test\r\nContent-Length: +5\r\n\r\nhello"
          "GET /three HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  auto r = responses(c);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, 200);
  EXPECT_EQ(r[1].status, 400);
  EXPECT_EQ(a.requests.size(), 1u);
}

// The classic WebSocket smuggling: the backend refuses the upgrade, the client goes on as if a
// tunnel were open. The connection stays HTTP: what follows goes through the parser and its
// checks (a CONNECT gets limpet's 501, never the backend), a plain request is served.
TEST_F(HttpSessionTest, AnUpgradeTheBackendRefusesLeavesTheConnectionInHttp) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage& m) -> std::optional<std::string> {
    return m.target == "/ws" ? "HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n" : FakeBackend::ok(m.target);
  };
  build();
  listen();
  const std::string upgrade =
      "GET /ws HTTP/1.1\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
  RawConn& c = client();
  c.write(upgrade + "GET /next HTTP/1.1\r\nHost: example.test\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return responses(c).size() == 2; }));
  EXPECT_EQ(responses(c)[0].status, 426);
  EXPECT_EQ(responses(c)[1].body, "/next");
  EXPECT_FALSE(c.eof);

  RawConn& d = client();
  d.write(upgrade + "CONNECT other:443 HTTP/1.1\r\nHost: other:443\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return d.eof; }));
  auto r = responses(d);
  ASSERT_EQ(r.size(), 2u);
  EXPECT_EQ(r[0].status, 426);
  EXPECT_EQ(r[1].status, 501);
  ASSERT_EQ(a.requests.size(), 3u);  // /ws, /next, /ws: never the CONNECT
  EXPECT_EQ(a.requests[2].target, "/ws");
}

}  // namespace
}  // namespace limpet::proxy::testing
