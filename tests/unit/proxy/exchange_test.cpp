// Exchange: one request across its attempts, driven by a small test ExchangeOwner, against real
// backend sockets that answer with hand-written bytes. The client side is a real stream too (the
// request body relay's source and the response sink), so that backpressure is real.
#include "limpet/proxy/exchange.hpp"

#include <gtest/gtest.h>

#include "harness.hpp"

namespace limpet::proxy::testing {
namespace {

using Phase = Exchange::Phase;

class ExchangeTest : public ProxyTest, public ExchangeOwner, public net::StreamDelegate {
 protected:
  // After the backends are added: the upstream, the client stream and the exchange.
  void prepare() {
    build();
    acceptor_ = std::make_unique<StreamAcceptor>(&loop_, &worker_.buffers);
    acceptor_->delegate = this;
    client_peer_ = &net_.conn();
    client_peer_->connect(acceptor_->port());
    ASSERT_TRUE(run_until([&] { return acceptor_->streams.size() == 1 && client_peer_->connect_status == 0; }));
    client_ = acceptor_->streams[0];
    client_->stop_reading();  // the body relay decides from here on
    body_relay_ = Relay(client_, nullptr);
    exchange_ = std::make_unique<Exchange>(&worker_, listener_.get(), this);
  }

  void release() override {
    if (exchange_) exchange_->abort();
    exchange_.reset();
    upgraded_lease_.release();
    body_relay_ = Relay();
    if (client_ != nullptr) client_->close();
    if (acceptor_) acceptor_->close();
    ProxyTest::release();
  }

  // A request head as a parser would leave it; the views point at literals or at strings_.
  void request(std::string_view method, std::string_view target, std::vector<http::Header> headers = {}) {
    head_.clear();
    head_.method = method;
    head_.target = target;
    size_t q = target.find('?');
    head_.path = target.substr(0, q);
    head_.query = q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
    head_.headers = {{"Host", "example.test"}};
    for (const auto& h : headers) head_.headers.push_back(h);
    head_.http_major = 1;
    head_.http_minor = 1;
    head_.keep_alive = true;
  }
  std::string_view keep(std::string s) { return strings_.emplace_back(std::move(s)); }

  void start() { exchange_->start({&head_, "127.0.0.1", &body_relay_}); }
  // A body-less request: started, and its (empty) body ended as the session would.
  void get(std::string_view target, std::vector<http::Header> headers = {}) {
    request("GET", target, std::move(headers));
    start();
    if (exchange_->active()) exchange_->end_body();
  }
  bool over() const { return ends_ + failed_.size() > 0; }
  void reset_record() {
    interim_.clear();
    status_ = 0;
    body_.clear();
    ends_ = 0;
    failed_.clear();
  }
  std::optional<std::string> response_header(std::string_view name) const {
    for (const auto& [n, v] : headers_) {
      if (n == name) return v;
    }
    return std::nullopt;
  }

  // ExchangeOwner
  void on_interim_response(const http::ResponseHead& head) override { interim_.push_back(head.status); }
  void on_response_head(const http::ResponseHead& head, std::string_view set_cookie) override {
    status_ = head.status;
    set_cookie_ = std::string(set_cookie);
    headers_.clear();
    for (const auto& h : head.headers) headers_.emplace_back(to_lower(h.name), std::string(h.value));
    in_flight_during_ = total_in_flight();
  }
  void on_response_body(std::string_view data) override {
    body_bytes_ += data.size();
    if (keep_body_) body_.append(data);
    if (write_to_sink_) client_->write(data);
  }
  void flush_response() override { ++flushes_; }
  void on_response_end() override {
    ++ends_;
    in_flight_at_end_ = total_in_flight();
    phase_at_end_ = exchange_->phase();
  }
  void on_exchange_failed(int status) override {
    failed_.push_back(status);
    in_flight_at_end_ = total_in_flight();
    phase_at_end_ = exchange_->phase();
  }
  void on_upgraded(UpgradeHandoff handoff) override {
    upgraded_ = true;
    leftover_ = std::string(handoff.leftover);
    upgraded_lease_ = std::move(handoff.lease);
    handoff.upstream->close();  // the test keeps no tunnel
  }
  net::ByteStream* response_sink() override { return client_; }
  void on_exchange_progress(bool) override { ++progress_; }

  // The client stream's events.
  void on_data(net::Stream*, std::string_view) override {}
  void on_end(net::Stream*, int) override {}
  void on_writable(net::Stream*) override {
    if (exchange_) exchange_->on_client_writable();
  }
  void on_closed(net::Stream*) override { client_ = nullptr; }
  void on_timeout(net::Stream*) override {}

  std::unique_ptr<StreamAcceptor> acceptor_;
  RawConn* client_peer_ = nullptr;
  net::Stream* client_ = nullptr;
  Relay body_relay_;
  std::unique_ptr<Exchange> exchange_;
  http::RequestHead head_;
  std::deque<std::string> strings_;

  std::vector<int> interim_;
  int status_ = 0;
  std::vector<std::pair<std::string, std::string>> headers_;
  std::string set_cookie_;
  std::string body_;
  uint64_t body_bytes_ = 0;
  bool keep_body_ = true;
  bool write_to_sink_ = false;
  int flushes_ = 0;
  int ends_ = 0;
  std::vector<int> failed_;
  int progress_ = 0;
  int64_t in_flight_during_ = -1;
  int64_t in_flight_at_end_ = -1;
  Phase phase_at_end_ = Phase::kConnecting;
  bool upgraded_ = false;
  std::string leftover_;
  BackendLease upgraded_lease_;
};

TEST_F(ExchangeTest, GetThroughARealBackendReportsHeadBodyAndEnd) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> {
    return FakeBackend::ok("hello", "X-Test: yes\r\n");
  };
  prepare();
  get("/path?x=1");
  EXPECT_EQ(exchange_->phase(), Phase::kConnecting);
  EXPECT_EQ(state(0).in_flight.load(), 1);
  ASSERT_TRUE(run_until([&] { return over(); }));

  ASSERT_TRUE(failed_.empty());
  EXPECT_EQ(ends_, 1);
  EXPECT_EQ(status_, 200);
  EXPECT_EQ(response_header("x-test"), "yes");
  EXPECT_EQ(body_, "hello");
  EXPECT_EQ(in_flight_during_, 1);
  EXPECT_EQ(in_flight_at_end_, 0);  // given back before the owner heard the end
  EXPECT_EQ(phase_at_end_, Phase::kIdle);
  EXPECT_FALSE(exchange_->active());
  EXPECT_STREQ(exchange_->backend_name(), "a");
  EXPECT_STREQ(exchange_->route_reason(), "placement");
  EXPECT_EQ(state(0).requests.load(), 1u);
  EXPECT_EQ(state(0).responses_by_class[2].load(), 1u);

  ASSERT_EQ(a.requests.size(), 1u);
  const RawMessage& r = a.requests[0];
  EXPECT_EQ(r.start_line, "GET /path?x=1 HTTP/1.1");
  EXPECT_EQ(r.header("host"), "example.test");
  EXPECT_EQ(r.header("x-forwarded-for"), "127.0.0.1");
  EXPECT_EQ(r.header("x-forwarded-proto"), "http");
  // A complete keep-alive response: the connection waits in the pool for the next request.
  EXPECT_EQ(worker_.pool.idle_count(), 1u);
}

TEST_F(ExchangeTest, InterimResponsesAndTheFinalOneInOneRead) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> {
    return "HTTP/1.1 100 Continue\r\n\r\n"
           "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
           "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone";
  };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_TRUE(failed_.empty());
  EXPECT_EQ(interim_, (std::vector<int>{100, 103}));
  EXPECT_EQ(status_, 200);
  EXPECT_EQ(body_, "done");
  EXPECT_EQ(ends_, 1);
  EXPECT_EQ(worker_.pool.idle_count(), 1u);  // nothing was left over: reusable
  EXPECT_EQ(total_in_flight(), 0);
}

TEST_F(ExchangeTest, ChunkedRequestBodyIsRechunked) {
  FakeBackend& a = backend("a");
  prepare();
  request("POST", "/upload", {{"Transfer-Encoding", "chunked"}});
  head_.chunked = true;
  start();
  exchange_->send_body("hello");
  exchange_->send_body("");  // nothing: an empty chunk would end the body
  exchange_->send_body(" world!");
  exchange_->end_body();
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  ASSERT_EQ(a.requests.size(), 1u);
  const RawMessage& r = a.requests[0];
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_FALSE(r.header("content-length"));
  EXPECT_EQ(r.raw.substr(r.head.size()), "5\r\nhello\r\n7\r\n world!\r\n0\r\n\r\n");
  EXPECT_EQ(r.body, "hello world!");
}

TEST_F(ExchangeTest, ContentLengthBodyGoesAsItIs) {
  FakeBackend& a = backend("a");
  prepare();
  request("PUT", "/item", {{"Content-Length", "11"}});
  head_.content_length = 11;
  start();
  exchange_->send_body("hello");
  exchange_->send_body(" world");
  exchange_->end_body();
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  ASSERT_EQ(a.requests.size(), 1u);
  EXPECT_EQ(a.requests[0].raw.substr(a.requests[0].head.size()), "hello world");
}

// The sticky cookie names the refused backend first; the retry excludes it and lands on the
// other one, whose cookie the client then gets.
TEST_F(ExchangeTest, ConnectRefusedIsRetriedOnAnotherBackend) {
  RefusedPort refused;
  add_backend("a", refused.port());
  FakeBackend& b = backend("b");
  ucfg_.sticky_cookie.enabled = true;
  prepare();
  std::string_view cookie = keep(ucfg_.sticky_cookie.name + "=" + upstream_->backends()[0].cookie_token);
  get("/", {{"Cookie", cookie}});
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_TRUE(failed_.empty());
  EXPECT_EQ(status_, 200);
  EXPECT_EQ(b.requests.size(), 1u);
  EXPECT_EQ(state(0).failures.load(), 1u);
  EXPECT_EQ(state(1).failures.load(), 0u);
  EXPECT_EQ(worker_.counters.retries.load(), 1u);
  EXPECT_STREQ(exchange_->backend_name(), "b");
  EXPECT_NE(set_cookie_.find(upstream_->backends()[1].cookie_token), std::string::npos) << set_cookie_;
  EXPECT_EQ(total_in_flight(), 0);
}

TEST_F(ExchangeTest, ConnectRefusedEverywhereIs502AfterMaxTries) {
  RefusedPort r1, r2, r3;
  add_backend("a", r1.port());
  add_backend("b", r2.port());
  add_backend("c", r3.port());
  ucfg_.max_tries = 2;
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(ends_, 0);
  uint64_t failures = 0;
  int untouched = 0;
  for (int i = 0; i < 3; ++i) {
    failures += state(i).failures.load();
    if (state(i).requests.load() == 0) ++untouched;
  }
  EXPECT_EQ(failures, 2u);  // max_tries connects, no more
  EXPECT_EQ(untouched, 1);
  EXPECT_EQ(worker_.counters.retries.load(), 1u);
  EXPECT_EQ(in_flight_at_end_, 0);
  EXPECT_EQ(total_in_flight(), 0);
}

// The connect timeout is the backend's fault: counted against it, and the request (nothing of
// it reached the backend) goes to the other one.
TEST_F(ExchangeTest, ConnectDeadlineWhileConnectingRetriesElsewhere) {
  FakeBackend& a = backend("a");
  FakeBackend& b = backend("b");
  ucfg_.sticky_cookie.enabled = true;
  ucfg_.connect_timeout = std::chrono::milliseconds(1234);
  prepare();
  std::string_view cookie = keep(ucfg_.sticky_cookie.name + "=" + upstream_->backends()[0].cookie_token);
  get("/", {{"Cookie", cookie}});
  ASSERT_EQ(exchange_->phase(), Phase::kConnecting);
  DeadlineSpec d = exchange_->deadline();
  EXPECT_EQ(d.kind, Deadline::kConnect);
  EXPECT_EQ(d.ms, 1234u);
  exchange_->on_deadline(Deadline::kConnect);
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_TRUE(failed_.empty());
  EXPECT_EQ(status_, 200);
  EXPECT_TRUE(a.requests.empty());
  EXPECT_EQ(b.requests.size(), 1u);
  EXPECT_EQ(state(0).failures.load(), 1u);
  EXPECT_EQ(state(1).failures.load(), 0u);
  EXPECT_EQ(total_in_flight(), 0);
}

// A pooled connection the backend closed after it got the request: the request (idempotent, no
// body, no sid) is sent once more, on a fresh connection.
TEST_F(ExchangeTest, StalePooledConnectionIsResentOnceOnAFreshConnection) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
    size_t on_this_conn = 0;
    for (RawConn* rc : a.request_conns) on_this_conn += rc == &c ? 1 : 0;
    if (on_this_conn == 2) {  // the second request on the first connection: gone stale
      c.close();
      return std::nullopt;
    }
    return FakeBackend::ok(m.target);
  };
  prepare();
  get("/first");
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  ASSERT_EQ(worker_.pool.idle_count(), 1u);
  reset_record();

  get("/second");
  EXPECT_EQ(exchange_->phase(), Phase::kAwaitingHead);  // pooled: no connect
  EXPECT_EQ(worker_.pool.idle_count(), 0u);
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_TRUE(failed_.empty()) << failed_[0];
  EXPECT_EQ(status_, 200);
  EXPECT_EQ(body_, "/second");
  ASSERT_EQ(a.requests.size(), 3u);
  EXPECT_EQ(a.requests[1].target, "/second");
  EXPECT_EQ(a.requests[2].target, "/second");
  EXPECT_NE(a.request_conns[1], a.request_conns[2]);
  EXPECT_EQ(settled_conns(a.server), 2u);
  EXPECT_EQ(state(0).failures.load(), 0u);  // a stale connection is nobody's failure
  EXPECT_EQ(worker_.counters.retries.load(), 0u);
  EXPECT_EQ(total_in_flight(), 0);
}

// The same stale connection, twice in a row: one resend, no more.
TEST_F(ExchangeTest, StaleResendHappensOnlyOnce) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
    if (a.requests.size() >= 2) {  // every request after the first: read, then the connection closes
      c.close();
      return std::nullopt;
    }
    return FakeBackend::ok(m.target);
  };
  prepare();
  get("/first");
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  reset_record();
  get("/second");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(a.requests.size(), 3u);  // the first, the second, its one resend
  EXPECT_EQ(settled_conns(a.server), 2u);
  EXPECT_EQ(total_in_flight(), 0);
}

// An Engine.IO poll (a sid, no body) on a pooled connection that closes before any response
// byte is sent again on a new connection to the same backend: a backend closes an idle
// keep-alive connection only when it holds no request, so this is what keeps the session
// alive (issue: Node's 5 s keep-alive timeout lost polling sessions). Never elsewhere.
TEST_F(ExchangeTest, SidPollOnAStalePooledConnectionIsResentToTheSameBackend) {
  FakeBackend& a = backend("a");
  FakeBackend& b = backend("b");
  a.respond = [&](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
    if (a.requests.size() == 2) {
      c.close();
      return std::nullopt;
    }
    return FakeBackend::ok(m.target);
  };
  prepare();
  affinity_->learn("sid-1", state(0).id, ucfg_.session_ttl);
  get("/socket.io/?EIO=4&transport=polling&sid=sid-1");
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  EXPECT_STREQ(exchange_->route_reason(), "affinity");
  reset_record();

  get("/socket.io/?EIO=4&transport=polling&sid=sid-1");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_TRUE(failed_.empty());
  EXPECT_EQ(ends_, 1);
  EXPECT_EQ(a.requests.size(), 3u);        // the first, the second, its one resend
  EXPECT_EQ(settled_conns(a.server), 2u);  // the resend went on a new connection
  EXPECT_EQ(settled_conns(b.server), 0u);  // and never elsewhere
  EXPECT_EQ(worker_.counters.stale_resends.load(), 1u);
  EXPECT_EQ(worker_.counters.retries.load(), 0u);
  EXPECT_EQ(total_in_flight(), 0);
}

// A sid request that the backend answers with a close after the response began is not sent
// again: only a close before any response byte means the request was never read.
TEST_F(ExchangeTest, SidRequestIsNotResentOnceTheResponseBegan) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
    if (a.requests.size() == 2) {
      c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart");
      c.close();
      return std::nullopt;
    }
    return FakeBackend::ok(m.target);
  };
  prepare();
  affinity_->learn("sid-1", state(0).id, ucfg_.session_ttl);
  get("/socket.io/?EIO=4&transport=polling&sid=sid-1");
  ASSERT_TRUE(run_until([&] { return over(); }));
  reset_record();
  get("/socket.io/?EIO=4&transport=polling&sid=sid-1");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(a.requests.size(), 2u);
  EXPECT_EQ(worker_.counters.stale_resends.load(), 0u);
  EXPECT_EQ(total_in_flight(), 0);
}

// Only idempotent, body-less requests are resent: a POST on a stale connection is a 502.
TEST_F(ExchangeTest, PostOnAStalePooledConnectionIsNotResent) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage& m) -> std::optional<std::string> {
    if (a.requests.size() == 2) {
      c.close();
      return std::nullopt;
    }
    return FakeBackend::ok(m.target);
  };
  prepare();
  get("/first");
  ASSERT_TRUE(run_until([&] { return over(); }));
  reset_record();
  request("POST", "/submit", {{"Content-Length", "2"}});
  head_.content_length = 2;
  start();
  exchange_->send_body("hi");
  exchange_->end_body();
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(a.requests.size(), 2u);
  EXPECT_EQ(settled_conns(a.server), 1u);
  EXPECT_EQ(total_in_flight(), 0);
}

TEST_F(ExchangeTest, DeadlineIsConnectThenFirstByteThenUpstreamIdle) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  ucfg_.connect_timeout = std::chrono::milliseconds(1234);
  ucfg_.read_timeout = std::chrono::milliseconds(2345);
  prepare();
  get("/slow");
  EXPECT_EQ(exchange_->deadline().kind, Deadline::kConnect);
  EXPECT_EQ(exchange_->deadline().ms, 1234u);
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  EXPECT_EQ(exchange_->phase(), Phase::kAwaitingHead);
  EXPECT_EQ(exchange_->deadline().kind, Deadline::kFirstByte);
  EXPECT_EQ(exchange_->deadline().ms, 2345u);
  EXPECT_EQ(state(0).in_flight.load(), 1);

  a.request_conns[0]->write("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab");
  ASSERT_TRUE(run_until([&] { return body_ == "ab"; }));
  EXPECT_EQ(exchange_->phase(), Phase::kReceiving);
  EXPECT_EQ(exchange_->deadline().kind, Deadline::kUpstreamIdle);
  EXPECT_EQ(exchange_->deadline().ms, 2345u);
  a.request_conns[0]->write("cdef");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(body_, "abcdef");
  EXPECT_EQ(total_in_flight(), 0);
}

// The client has sent part of its body and the backend took all of it: the client is waited on.
TEST_F(ExchangeTest, DeadlineIsClientBodyWhileTheBodyIsIncompleteAndTheUpstreamKeepsUp) {
  FakeBackend& a = backend("a");
  lcfg_.body_timeout = std::chrono::milliseconds(3456);
  prepare();
  request("POST", "/upload", {{"Content-Length", "10"}});
  head_.content_length = 10;
  start();
  exchange_->send_body("12345");
  auto backend_has_half = [&] {
    return a.server.conns.size() == 1 && a.server.conns[0]->in.size() > 5 &&
           a.server.conns[0]->in.ends_with("\r\n\r\n12345");
  };
  ASSERT_TRUE(run_until(backend_has_half));
  EXPECT_EQ(exchange_->phase(), Phase::kSending);
  EXPECT_EQ(body_relay_.waiting(), Relay::Waiting::kSource);
  EXPECT_TRUE(client_->reading());  // the body relay reads the client while the upstream keeps up
  DeadlineSpec d = exchange_->deadline();
  EXPECT_EQ(d.kind, Deadline::kClientBody);
  EXPECT_EQ(d.ms, 3456u);
  EXPECT_FALSE(blames_backend(d.kind));

  exchange_->send_body("67890");
  exchange_->end_body();
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(ends_, 1);
  EXPECT_EQ(a.requests[0].body, "1234567890");
}

// The backend reads none of the body: its queue fills, the client is no longer read, and the
// deadline is the backend's (send_timeout), which counts against it when it passes.
TEST_F(ExchangeTest, DeadlineIsUpstreamSendWhenTheUpstreamQueueIsFull) {
  FakeBackend& a = backend("a");
  a.server.on_accept = [](RawConn& c) {
    c.accumulate = false;
    c.on_data = [](RawConn& conn, std::string_view) { conn.stop_reading(); };
  };
  ucfg_.send_timeout = std::chrono::milliseconds(4567);
  prepare();
  request("POST", "/upload", {{"Content-Length", "1073741824"}});
  head_.content_length = 1ull << 30;
  start();
  ASSERT_TRUE(run_until([&] { return exchange_->phase() == Phase::kSending; }));
  EXPECT_EQ(exchange_->deadline().kind, Deadline::kClientBody);
  std::string chunk(1 << 20, 'u');
  for (int i = 0; i < 256 && body_relay_.waiting() != Relay::Waiting::kSink; ++i) {
    exchange_->send_body(chunk);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }
  ASSERT_EQ(body_relay_.waiting(), Relay::Waiting::kSink);
  EXPECT_FALSE(client_->reading());
  DeadlineSpec d = exchange_->deadline();
  EXPECT_EQ(d.kind, Deadline::kUpstreamSend);
  EXPECT_EQ(d.ms, 4567u);
  EXPECT_TRUE(blames_backend(d.kind));

  exchange_->on_deadline(Deadline::kUpstreamSend);
  EXPECT_EQ(failed_, (std::vector<int>{504}));
  EXPECT_EQ(state(0).failures.load(), 1u);
  EXPECT_EQ(in_flight_at_end_, 0);
  EXPECT_FALSE(exchange_->active());
}

TEST_F(ExchangeTest, FirstByteDeadlineFailsWith504AndCountsAgainstTheBackend) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  ASSERT_EQ(exchange_->deadline().kind, Deadline::kFirstByte);
  EXPECT_EQ(state(0).in_flight.load(), 1);
  exchange_->on_deadline(Deadline::kFirstByte);
  EXPECT_EQ(failed_, (std::vector<int>{504}));
  EXPECT_EQ(state(0).failures.load(), 1u);
  EXPECT_EQ(state(0).responses_by_class[5].load(), 1u);
  EXPECT_EQ(in_flight_at_end_, 0);
  RawConn* up = a.request_conns[0];
  ASSERT_TRUE(run_until([&] { return up->eof || up->read_error != 0; }));  // not pooled: closed
  EXPECT_EQ(worker_.pool.idle_count(), 0u);
}

// The client reads none of the response: the sink fills, the backend is no longer read, and the
// deadline is the client's (listener.send_timeout), never the backend's.
TEST_F(ExchangeTest, DeadlineIsClientSendWhenTheOwnersSinkIsFull) {
  constexpr uint64_t kBody = 256ull << 20;
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    c.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(kBody) + "\r\n\r\n");
    c.pump(kBody);
    return std::nullopt;
  };
  lcfg_.send_timeout = std::chrono::milliseconds(5678);
  prepare();
  client_peer_->stop_reading();
  keep_body_ = false;
  write_to_sink_ = true;
  get("/big");
  ASSERT_TRUE(run_until([&] { return exchange_->deadline().kind == Deadline::kClientSend; }, 20000))
      << "got " << body_bytes_ << " bytes, deadline " << to_string(exchange_->deadline().kind);
  EXPECT_EQ(exchange_->deadline().ms, 5678u);
  EXPECT_FALSE(blames_backend(Deadline::kClientSend));
  EXPECT_TRUE(client_->out().above_high_water());
  EXPECT_LT(body_bytes_, kBody);
  EXPECT_EQ(state(0).in_flight.load(), 1);

  // The owner gives up on its client: no callback, the lease back, the backend connection closed.
  exchange_->abort();
  EXPECT_FALSE(exchange_->active());
  EXPECT_EQ(ends_, 0);
  EXPECT_TRUE(failed_.empty());
  EXPECT_EQ(state(0).in_flight.load(), 0);
  EXPECT_EQ(state(0).failures.load(), 0u);
  RawConn* up = a.request_conns[0];
  ASSERT_TRUE(run_until([&] { return up->eof || up->read_error != 0 || up->write_error != 0; }));
}

TEST_F(ExchangeTest, AbortWhileConnectingGivesTheLeaseBack) {
  backend("a");
  prepare();
  get("/");
  ASSERT_EQ(exchange_->phase(), Phase::kConnecting);
  EXPECT_EQ(state(0).in_flight.load(), 1);
  exchange_->abort();
  EXPECT_EQ(state(0).in_flight.load(), 0);
  EXPECT_EQ(exchange_->phase(), Phase::kIdle);
  EXPECT_EQ(ends_ + failed_.size(), 0u);
}

TEST_F(ExchangeTest, NoUsableBackendIs503WithoutALease) {
  backend("a");
  prepare();
  state(0).up = false;
  get("/");
  EXPECT_EQ(failed_, (std::vector<int>{503}));
  EXPECT_EQ(state(0).in_flight.load(), 0);
  EXPECT_EQ(state(0).requests.load(), 0u);
}

TEST_F(ExchangeTest, InvalidResponseIs502) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return "HTTP/1.1 abc\r\n\r\n"; };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(total_in_flight(), 0);
}

TEST_F(ExchangeTest, BackendClosingMidResponseFailsAfterTheHead) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    c.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial");
    c.shutdown();
    return std::nullopt;
  };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(status_, 200);
  EXPECT_EQ(body_, "partial");
  EXPECT_EQ(failed_, (std::vector<int>{502}));  // after the head: the owner can only cut it short
  EXPECT_EQ(total_in_flight(), 0);
}

TEST_F(ExchangeTest, UntilCloseBodyEndsAtEofAndIsNotPooled) {
  FakeBackend& a = backend("a");
  a.respond = [](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    c.write("HTTP/1.1 200 OK\r\n\r\nall of it");
    c.shutdown();
    return std::nullopt;
  };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_TRUE(failed_.empty());
  EXPECT_EQ(ends_, 1);
  EXPECT_EQ(body_, "all of it");
  EXPECT_EQ(worker_.pool.idle_count(), 0u);
}

// The 101 goes to the owner with the bytes that followed it and the lease, which then holds the
// backend until the tunnel lets it go.
TEST_F(ExchangeTest, UpgradeHandsOverTheConnectionTheLeftoverAndTheLease) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    a.set_raw(c);
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nearly";
  };
  prepare();
  request("GET", "/ws",
          {{"Connection", "Upgrade"}, {"Upgrade", "websocket"}, {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="},
           {"Sec-WebSocket-Version", "13"}});
  head_.upgrade = true;
  head_.websocket = true;
  start();
  exchange_->end_body();
  ASSERT_TRUE(run_until([&] { return upgraded_ || !failed_.empty(); }));
  ASSERT_TRUE(upgraded_);
  EXPECT_EQ(status_, 101);
  EXPECT_EQ(leftover_, "early");
  EXPECT_FALSE(exchange_->active());
  EXPECT_EQ(a.requests[0].header("upgrade"), "websocket");
  EXPECT_EQ(state(0).in_flight.load(), 1);  // the lease went with the connection
  upgraded_lease_.release();
  EXPECT_EQ(state(0).in_flight.load(), 0);
}

TEST_F(ExchangeTest, SwitchingProtocolsToAPlainRequestIs502) {
  FakeBackend& a = backend("a");
  a.respond = [&](RawConn& c, const RawMessage&) -> std::optional<std::string> {
    a.set_raw(c);
    return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
  };
  prepare();
  get("/");
  ASSERT_TRUE(run_until([&] { return over() || upgraded_; }));
  EXPECT_FALSE(upgraded_);
  EXPECT_EQ(failed_, (std::vector<int>{502}));
  EXPECT_EQ(total_in_flight(), 0);
}

// An Engine.IO handshake response teaches the affinity table its sid (v4 open packet).
TEST_F(ExchangeTest, HandshakeResponseTeachesTheSid) {
  FakeBackend& a = backend("a");
  backend("b");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> {
    return FakeBackend::ok(R"(0{"sid":"learned-1","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000})");
  };
  ucfg_.sticky_cookie.enabled = true;
  prepare();
  std::string_view cookie = keep(ucfg_.sticky_cookie.name + "=" + upstream_->backends()[0].cookie_token);
  get("/socket.io/?EIO=4&transport=polling", {{"Cookie", cookie}});
  ASSERT_TRUE(run_until([&] { return over(); }));
  ASSERT_EQ(ends_, 1);
  EXPECT_EQ(affinity_->lookup("learned-1", ucfg_.session_ttl), state(0).id);
}


// A backend that answers every request with 503 "busy".
std::optional<std::string> answer_503(RawConn&, const RawMessage&) {
  return "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy";
}

// A new session answered with a failure status (health.failure_statuses) goes to another
// backend: the client sees that one's handshake, and placement avoids the failing backend
// for the next new sessions (until fail_timeout or a good handshake there).
TEST_F(ExchangeTest, HandshakeAnsweredWithAFailureStatusIsRetriedElsewhereAndTheBackendAvoided) {
  FakeBackend& a = backend("a");
  FakeBackend& b = backend("b");
  a.respond = answer_503;
  ucfg_.health.max_fails = 0;  // the penalty alone, not passive marking, keeps new sessions away
  prepare();
  state(1).sessions.store(10);  // b is busier: the first handshake is placed on a
  for (int i = 0; i < 6; ++i) {
    reset_record();
    get("/socket.io/?EIO=4&transport=polling");
    ASSERT_TRUE(run_until([&] { return over(); }));
    EXPECT_EQ(status_, 200) << "handshake " << i;
    EXPECT_STREQ(exchange_->backend_name(), "b");
  }
  EXPECT_EQ(a.requests.size(), 1u);  // once, then avoided
  EXPECT_EQ(b.requests.size(), 6u);
  EXPECT_EQ(worker_.counters.handshake_retries.load(), 1u);
  EXPECT_TRUE(state(0).failing_new_sessions(clock_.now_ms()));
  EXPECT_EQ(total_in_flight(), 0);
  state(1).sessions.store(0);
  // After fail_timeout the backend is tried again; a good handshake ends the penalty.
  clock_.advance(ucfg_.health.fail_timeout.count());
  EXPECT_FALSE(state(0).failing_new_sessions(clock_.now_ms()));
}

// A failure status to a request that is no new session (a sid's poll) is the application's
// answer: passed on, nothing retried.
TEST_F(ExchangeTest, FailureStatusToAKnownSessionIsPassedOn) {
  FakeBackend& a = backend("a");
  backend("b");
  a.respond = answer_503;
  prepare();
  affinity_->learn("sid-1", state(0).id, ucfg_.session_ttl);
  get("/socket.io/?EIO=4&transport=polling&sid=sid-1");
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(status_, 503);
  EXPECT_EQ(body_, "busy");
  EXPECT_EQ(worker_.counters.handshake_retries.load(), 0u);
  EXPECT_FALSE(state(0).failing_new_sessions(clock_.now_ms()));
}

// A hung backend (accepts, answers nothing): the handshake goes elsewhere after
// handshake_timeout, not read_timeout, and new sessions avoid the backend from then on.
TEST_F(ExchangeTest, HandshakeWithoutAnAnswerWithinHandshakeTimeoutGoesElsewhere) {
  FakeBackend& a = backend("a");
  FakeBackend& b = backend("b");
  a.respond = [](RawConn&, const RawMessage&) -> std::optional<std::string> { return std::nullopt; };
  ucfg_.handshake_timeout = std::chrono::milliseconds(200);
  ucfg_.read_timeout = std::chrono::milliseconds(60000);
  prepare();
  // Place the first handshake on the hung backend: b is busier.
  state(1).sessions.store(10);
  get("/socket.io/?EIO=4&transport=polling");
  ASSERT_TRUE(run_until([&] { return a.requests.size() == 1; }));
  // The owner's timer fires what deadline() names: handshake_timeout, not read_timeout.
  DeadlineSpec d = exchange_->deadline();
  EXPECT_EQ(d.kind, Deadline::kFirstByte);
  EXPECT_EQ(d.ms, 200u);
  exchange_->on_deadline(d.kind);
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_EQ(status_, 200);
  EXPECT_STREQ(exchange_->backend_name(), "b");
  EXPECT_EQ(worker_.counters.handshake_retries.load(), 1u);
  ASSERT_TRUE(run_until([&] { return a.request_conns[0]->eof; }));  // its connection was closed
  reset_record();
  get("/socket.io/?EIO=4&transport=polling");  // b still busier, a avoided
  ASSERT_TRUE(run_until([&] { return over(); }));
  EXPECT_STREQ(exchange_->backend_name(), "b");
  EXPECT_EQ(a.requests.size(), 1u);
  EXPECT_EQ(b.requests.size(), 2u);
  state(1).sessions.store(0);
}

}  // namespace
}  // namespace limpet::proxy::testing
