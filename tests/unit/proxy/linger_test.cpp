// The end of an HTTP/1 connection once its last exchange is over: the answer still queued toward a
// slow or half-closed client is delivered whole, then the connection closes. Regression tests for
// bugs found in the second proxy core (a stale exchange deadline firing on an idle exchange, a
// client FIN dropping the queued answer, the linger cutting a slow reader short, pipelined
// requests before a FIN left unanswered). Where a test waits out a bounded time, it gives a
// wrongly armed timer the chance to fire; the check is then on what the client received.
#include <gtest/gtest.h>

#include "harness.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/proxy/client_connection.hpp"

namespace limpet::proxy::testing {
namespace {

class LingerTest : public ProxyTest {
 protected:
  // The backend's chunked response is forwarded chunk by chunk until limpet's queue toward the
  // (non-reading) client is non-empty; then the last chunk completes the response.
  uint64_t respond_until_queued(RawConn& up) {
    up.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    ClientConnection* conn = only_connection();
    EXPECT_NE(conn, nullptr);
    uint64_t total = 0;
    std::string payload(32768, 'p');
    for (int i = 0; i < 2000; ++i) {
      size_t before = conn->client()->out().bytes_sent();
      up.write("8000\r\n" + payload + "\r\n");
      total += payload.size();
      EXPECT_TRUE(run_until([&] { return conn->client()->out().bytes_sent() >= before + payload.size(); }));
      if (conn->client()->out().pending() > 0) break;
    }
    EXPECT_GT(conn->client()->out().pending(), 0u);
    EXPECT_FALSE(conn->client()->out().above_high_water());
    up.write("0\r\n\r\n");
    return total;
  }
  // A client of backend "a" that sent `bytes` and has read until limpet's EOF.
  RawConn& send_and_read_to_eof(std::string_view bytes) {
    backend("a");
    build();
    listen();
    RawConn& c = client();
    c.write(std::string(bytes));
    EXPECT_TRUE(run_until([&] { return c.eof; }));
    return c;
  }
  void expect_whole(RawConn& c, uint64_t total) {
    c.start_reading();
    EXPECT_TRUE(run_until([&] { return c.eof || c.read_error != 0 || read_message(c.in, true).has_value(); }, 10000));
    auto m = read_message(c.in, true, c.eof);
    ASSERT_TRUE(m.has_value()) << "truncated: got " << c.in.size() << " bytes, eof " << c.eof << " err " << c.read_error;
    EXPECT_EQ(m->body.size(), total);
  }
};

// The client half-closes while limpet still holds the end of a complete response.
TEST_F(LingerTest, ClientFinWhileTheAnswerIsQueuedStillGetsItWhole) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  build();
  listen();
  RawConn& c = client();
  ASSERT_TRUE(run_until([&] { return c.connect_status == 0; }));
  c.stop_reading();
  c.write("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  uint64_t total = respond_until_queued(*a.request_conns[0]);
  ASSERT_TRUE(run_until([&] { return worker_.pool.idle_count() == 1; }));  // the exchange is complete
  ASSERT_GT(only_connection()->client()->out().pending(), 0u);
  c.shutdown();
  run_until([&] { return open_count() == 0; }, 1000);
  expect_whole(c, total);
}

// A half-closed client whose complete response is still queued: the exchange's last deadline
// (upstream idle, read_timeout) must not fire on the idle exchange (it crashed limpet).
TEST_F(LingerTest, HalfClosedSlowReaderGetsTheWholeResponseAndNoStaleBackendDeadline) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  ucfg_.read_timeout = std::chrono::milliseconds(300);
  lcfg_.send_timeout = std::chrono::milliseconds(5000);
  lcfg_.ignore_client_abort = true;  // the half-close comes before the answer
  build();
  listen();
  RawConn& c = client();
  ASSERT_TRUE(run_until([&] { return c.connect_status == 0; }));
  c.stop_reading();
  c.write("GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  uint64_t total = respond_until_queued(*a.request_conns[0]);
  ASSERT_TRUE(run_until([&] { return worker_.pool.idle_count() == 1; }));
  run_until([&] { return open_count() == 0; }, 1500);
  expect_whole(c, total);
}

// A client that reads a Connection: close response slowly: the 2 s linger runs from when the
// response was written out, not from the end of the exchange.
TEST_F(LingerTest, LingerStartsOnlyOnceTheAnswerIsWritten) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  build();
  listen();
  RawConn& c = client();
  ASSERT_TRUE(run_until([&] { return c.connect_status == 0; }));
  c.stop_reading();
  c.write("GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  uint64_t total = respond_until_queued(*a.request_conns[0]);
  ASSERT_TRUE(run_until([&] { return worker_.pool.idle_count() == 1; }));
  run_until([&] { return open_count() == 0; }, 3000);
  expect_whole(c, total);
}

// A client that asked for the close and whose request was read to its end sends nothing more:
// limpet closes at once instead of lingering for its FIN (2 s at most), and the answer arrives
// whole before the EOF. The client here never closes its side.
TEST_F(LingerTest, AClientThatAskedForTheCloseIsClosedWithoutWaitingForItsFin) {
  RawConn& c = send_and_read_to_eof("GET /one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ASSERT_TRUE(run_until([&] { return open_count() == 0; }, 1000)) << "limpet waited for the client's FIN";
  std::string in = c.in;
  auto r = take_messages(in, true, true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
}

// The same request followed by bytes (a pipelined request the close makes moot): those bytes
// may be followed by more, so limpet lingers as before, and the answer is whole; once the client
// closes, so does limpet.
TEST_F(LingerTest, BytesAfterAConnectionCloseRequestStillGetTheLinger) {
  RawConn& c = send_and_read_to_eof(
      "GET /one HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(open_count(), 1u) << "closed with unread client bytes: a reset could destroy the answer";
  std::string in = c.in;
  auto r = take_messages(in, true, true);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].status, 200);
  c.shutdown();
  EXPECT_TRUE(run_until([&] { return open_count() == 0; }));
}

// Two pipelined requests, then the client half-closes: with ignore_client_abort both are answered.
TEST_F(LingerTest, PipelinedRequestsBeforeAHalfCloseAreAllAnswered) {
  backend("a");
  lcfg_.ignore_client_abort = true;
  build();
  listen();
  RawConn& c = client();
  c.write("GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n");
  c.shutdown();
  ASSERT_TRUE(run_until([&] { return c.eof; }));
  std::string in = c.in;
  auto r = take_messages(in, true, true);
  EXPECT_EQ(r.size(), 2u);
}

}  // namespace
}  // namespace limpet::proxy::testing
