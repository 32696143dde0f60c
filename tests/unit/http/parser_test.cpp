#include "limpet/http/parser.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace limpet::http {
namespace {

// Records what the parser reports, the way the proxy consumes it.
struct Recorder : ParserDelegate {
  std::vector<std::string> heads;
  std::string body;
  int messages = 0;
  size_t body_limit = SIZE_MAX;
  Parser* parser = nullptr;
  bool on_head() override {
    if (parser->kind() == Parser::Kind::kResponse) {
      heads.push_back(std::to_string(parser->response().status));
    } else {
      heads.push_back(std::string(parser->request().method) + " " +
                      std::string(parser->request().target));
    }
    return false;
  }
  bool on_body(std::string_view d) override {
    body.append(d);
    return body.size() <= body_limit;
  }
  void on_message_end() override { ++messages; }
};

struct RequestFixture : ::testing::Test {
  Recorder rec;
  Parser parser{Parser::Kind::kRequest, {}, &rec};
  void SetUp() override { rec.parser = &parser; }
};

TEST_F(RequestFixture, HeadSplitAcrossReadsAtEveryByte) {
  const std::string req =
      "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: example.com\r\n"
      "X-Long-Header: aaaaaaaaaaaaaaaaaaaa\r\nAccept: */*\r\n\r\n";
  for (size_t i = 0; i < req.size(); ++i) {
    auto out = parser.execute(std::string_view(req).substr(i, 1));
    if (i + 1 < req.size()) {
      ASSERT_EQ(out.state, Parser::State::kNeedMore) << "at byte " << i;
    } else {
      ASSERT_EQ(out.state, Parser::State::kPaused);
    }
  }
  auto head = parser.take_request();
  ASSERT_TRUE(head);
  EXPECT_EQ(head->method, "GET");
  EXPECT_EQ(head->path, "/socket.io/");
  EXPECT_EQ(head->query, "EIO=4&transport=polling");
  ASSERT_EQ(head->headers.size(), 3u);
  EXPECT_EQ(head->headers[1].name, "X-Long-Header");
  EXPECT_EQ(head->headers[1].value, "aaaaaaaaaaaaaaaaaaaa");
  EXPECT_EQ(*head->header("host"), "example.com");
  EXPECT_TRUE(head->keep_alive);
}

TEST_F(RequestFixture, PipelinedRequestsStopAfterEachMessage) {
  const std::string two =
      "GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";
  auto out = parser.execute(two);
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(rec.messages, 1);
  EXPECT_EQ(rec.heads, std::vector<std::string>{"GET /a"});
  std::string_view rest = std::string_view(two).substr(out.consumed);
  EXPECT_TRUE(rest.starts_with("POST /b"));
  parser.resume();
  out = parser.execute(rest);
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(out.consumed, rest.size());
  EXPECT_EQ(rec.messages, 2);
  EXPECT_EQ(rec.body, "hello");
}

TEST_F(RequestFixture, ChunkedBodyIsDecoded) {
  auto out = parser.execute(
      "POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(rec.body, "hello world");
  EXPECT_TRUE(parser.request().chunked);
}

TEST_F(RequestFixture, WebSocketUpgradeLeavesTrailingBytes) {
  const std::string req =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
      "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
  auto out = parser.execute(req);
  ASSERT_EQ(out.state, Parser::State::kUpgrade);
  EXPECT_TRUE(parser.request().upgrade);
  EXPECT_TRUE(parser.request().websocket);
  EXPECT_EQ(req.size() - out.consumed, 11u);
}

// An upgrade the backend refused: resume() goes on parsing the same connection as HTTP.
TEST_F(RequestFixture, ResumeAfterAnUpgradeNotTakenParsesHttp) {
  const std::string req =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
  auto out = parser.execute(req);
  ASSERT_EQ(out.state, Parser::State::kUpgrade);
  parser.resume();
  out = parser.execute(std::string_view(req).substr(out.consumed));
  ASSERT_EQ(out.state, Parser::State::kPaused) << parser.error_reason();
  EXPECT_EQ(rec.heads, (std::vector<std::string>{"GET /ws", "GET /next"}));
}

// llhttp skips the body of an upgrade only when it has no chunked or Content-Length framing
// (K4: a Transfer-Encoding that is not chunked, refused above); a framed body is read as a body.
TEST_F(RequestFixture, AnUpgradeWithAContentLengthBodyReadsTheBody) {
  const std::string req =
      "POST /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 5\r\n\r\n"
      "helloGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
  auto out = parser.execute(req);
  ASSERT_EQ(out.state, Parser::State::kUpgrade);
  EXPECT_EQ(rec.body, "hello");
  EXPECT_TRUE(std::string_view(req).substr(out.consumed).starts_with("GET /next"));
}

TEST_F(RequestFixture, UpgradeWithoutKeyIsNotAWebSocket) {
  auto out = parser.execute(
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
  ASSERT_EQ(out.state, Parser::State::kUpgrade);
  EXPECT_TRUE(parser.request().upgrade);
  EXPECT_FALSE(parser.request().websocket);
}

TEST_F(RequestFixture, ConflictingContentLengthAndChunkedIsRejected) {
  auto out = parser.execute(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 400);
}

TEST_F(RequestFixture, DuplicateContentLengthIsRejected) {
  auto out = parser.execute(
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde");
  EXPECT_EQ(out.state, Parser::State::kError);
}

TEST_F(RequestFixture, BadChunkSizeIsRejected) {
  auto out = parser.execute(
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 400);
}

TEST_F(RequestFixture, GarbageIsRejected) {
  auto out = parser.execute("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 400);
}

TEST(ParserLimits, LongRequestLineIs414) {
  Recorder rec;
  Parser parser(Parser::Kind::kRequest, {16 * 1024, 100}, &rec);
  rec.parser = &parser;
  auto out = parser.execute("GET /" + std::string(200, 'a') + " HTTP/1.1\r\n\r\n");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 414);
}

TEST(ParserLimits, LargeHeadIs431) {
  Recorder rec;
  Parser parser(Parser::Kind::kRequest, {1024, 512}, &rec);
  rec.parser = &parser;
  std::string req = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < 40; ++i) req += "X-Filler-" + std::to_string(i) + ": 0123456789012345678901234\r\n";
  auto out = parser.execute(req + "\r\n");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 431);
}

TEST(ParserLimits, BodyLimitReportedAs413) {
  Recorder rec;
  rec.body_limit = 3;
  Parser parser(Parser::Kind::kRequest, {}, &rec);
  rec.parser = &parser;
  auto out = parser.execute("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789");
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 413);
}

struct ResponseFixture : ::testing::Test {
  Recorder rec;
  Parser parser{Parser::Kind::kResponse, {}, &rec};
  void SetUp() override { rec.parser = &parser; }
};

TEST_F(ResponseFixture, UntilCloseBodyEndsAtEof) {
  auto out = parser.execute("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome bytes");
  ASSERT_EQ(out.state, Parser::State::kNeedMore);
  EXPECT_TRUE(parser.needs_eof());
  out = parser.finish();
  EXPECT_NE(out.state, Parser::State::kError);
  EXPECT_EQ(rec.messages, 1);
  EXPECT_EQ(rec.body, "some bytes");
}

TEST_F(ResponseFixture, TruncatedLengthBodyIsAnError) {
  parser.execute("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
  EXPECT_EQ(parser.finish().state, Parser::State::kError);
}

TEST_F(ResponseFixture, ContinueThenFinalResponse) {
  auto out = parser.execute("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n");
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(rec.heads, std::vector<std::string>{"100"});
  parser.resume();
  out = parser.execute(std::string_view("HTTP/1.1 204 No Content\r\n\r\n"));
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(rec.heads.back(), "204");
}

// A 304 may repeat the representation's Content-Length, a 204 or 1xx may carry a stray framing
// header: none has a body, and what follows the head is the next response.
TEST_F(ResponseFixture, NoBodyStatusesEndAtTheirHeadWhateverTheirFraming) {
  for (const char* head : {"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
                           "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                           "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
                           "HTTP/1.1 103 Early Hints\r\nContent-Length: 5\r\n\r\n"}) {
    Recorder r;
    Parser p{Parser::Kind::kResponse, {}, &r};
    r.parser = &p;
    const std::string bytes = std::string(head) + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    auto out = p.execute(bytes);
    ASSERT_EQ(out.state, Parser::State::kPaused) << head;
    EXPECT_EQ(out.consumed, std::string(head).size()) << head;
    EXPECT_EQ(r.body, "") << head;
    p.resume();
    out = p.execute(std::string_view(bytes).substr(out.consumed));
    ASSERT_EQ(out.state, Parser::State::kPaused) << head;
    EXPECT_EQ(r.body, "ok") << head;
  }
}

TEST_F(ResponseFixture, SwitchingProtocolsKeepsFrameBytes) {
  const std::string resp =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
  auto out = parser.execute(resp);
  ASSERT_EQ(out.state, Parser::State::kUpgrade);
  EXPECT_EQ(parser.response().status, 101);
  EXPECT_EQ(resp.substr(out.consumed), "\x81\x02hi");
}

TEST_F(ResponseFixture, HeadResponseHasNoBody) {
  parser.expect_no_body_response(true);
  auto out = parser.execute("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
  ASSERT_EQ(out.state, Parser::State::kPaused);
  EXPECT_EQ(rec.messages, 1);
}

// The proxy keeps one parser per connection: every message reuses the same head and its buffers,
// and nothing of an earlier message leaks into the next.
TEST_F(RequestFixture, PipelinedRequestsReuseOneHead) {
  const std::string first =
      "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX-First: yes\r\n\r\nhi";
  const std::string second = "GET /next?x=1 HTTP/1.0\r\nHost: b\r\n\r\n";
  ASSERT_EQ(parser.execute(first).state, Parser::State::kPaused);
  const RequestHead* head = &parser.request();
  EXPECT_TRUE(head->content_length.has_value());
  const size_t capacity = head->storage.capacity();
  parser.resume();
  ASSERT_EQ(parser.execute(second).state, Parser::State::kPaused);
  EXPECT_EQ(&parser.request(), head);
  EXPECT_EQ(head->storage.capacity(), capacity);
  EXPECT_EQ(head->method, "GET");
  EXPECT_EQ(head->target, "/next?x=1");
  EXPECT_EQ(head->query, "x=1");
  EXPECT_EQ(head->http_minor, 0);
  ASSERT_EQ(head->headers.size(), 1u);
  EXPECT_EQ(*head->header("host"), "b");
  EXPECT_FALSE(head->content_length.has_value());
  EXPECT_FALSE(head->header("x-first").has_value());
}

TEST_F(ResponseFixture, ResetStartsAFreshConnection) {
  ASSERT_EQ(parser.execute("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").state,
            Parser::State::kNeedMore);
  parser.reset();  // the connection went away mid-body; the next one starts clean
  ASSERT_EQ(parser.execute("HTTP/1.1 204 No Content\r\n\r\n").state, Parser::State::kPaused);
  EXPECT_EQ(parser.response().status, 204);
  EXPECT_EQ(rec.messages, 1);
}

}  // namespace
// ---------------------------------------------------------------------------------------------
// What limpet refuses although strict llhttp lets it through (tests/fuzz/README.md K1-K9): the
// status, and that the delegate never saw the head (so nothing of it reaches a backend). Fed in
// one read and one byte per read: the verdict must not depend on how the bytes arrive.

struct Refused {
  const char* what;
  std::string bytes;
  int status;
};

void expect_refused_before_head(const Refused& c) {
  for (bool bytewise : {false, true}) {
    SCOPED_TRACE(std::string(c.what) + (bytewise ? " (byte by byte)" : " (one read)"));
    Recorder rec;
    Parser parser(Parser::Kind::kRequest, {}, &rec);
    rec.parser = &parser;
    Parser::State state = Parser::State::kNeedMore;
    for (size_t at = 0; at < c.bytes.size() && state == Parser::State::kNeedMore;) {
      const size_t n = bytewise ? 1 : c.bytes.size();
      state = parser.execute(std::string_view(c.bytes).substr(at, n)).state;
      at += n;
    }
    EXPECT_EQ(state, Parser::State::kError);
    EXPECT_EQ(parser.error_status(), c.status) << parser.error_reason();
    EXPECT_TRUE(rec.heads.empty()) << "the head reached the delegate: " << rec.heads.front();
  }
}

const std::string kHost = "Host: x\r\n";

TEST(RequestRefusals, Http10WithTransferEncodingK1) {
  expect_refused_before_head({"K1", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head(
      {"K1 with CL", "POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
}

TEST(RequestRefusals, VersionsOtherThanHttp1K2) {
  expect_refused_before_head({"HTTP/0.9", "GET /a\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"HTTP/0.9 empty line", "GET /a\r\n\r\n", 400});
  expect_refused_before_head({"HTTP/2.0 request line", "GET / HTTP/2.0\r\n" + kHost + "\r\n", 505});
  expect_refused_before_head({"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400});
}

TEST(RequestRefusals, ConnectAndUpgradesWithSkippedFramingK4) {
  expect_refused_before_head({"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 501});
  expect_refused_before_head(
      {"CONNECT with CL", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello", 501});
  expect_refused_before_head({"CONNECT with TE",
                              "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                              501});
  expect_refused_before_head({"Upgrade with TE identity",
                              "GET / HTTP/1.1\r\n" + kHost +
                                  "Connection: Upgrade\r\nUpgrade: h2c\r\nTransfer-Encoding: identity\r\n\r\n",
                              400});
}

// RFC 9112 §6.3: chunked not last is 400 (MUST); §6.1: a coding limpet does not implement before
// the final chunked is 501.
TEST(RequestRefusals, TransferEncodingNotExactlyChunkedK6) {
  const std::string post = "POST / HTTP/1.1\r\n" + kHost;
  expect_refused_before_head({"gzip", post + "Transfer-Encoding: gzip\r\n\r\nabc", 400});
  expect_refused_before_head({"xchunked", post + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head({"gzip, chunked", post + "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501});
  expect_refused_before_head({"chunked, identity", post + "Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head({"chunked twice", post + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head({"empty element", post + "Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head({"empty", post + "Transfer-Encoding: \r\n\r\n", 400});
}

TEST(RequestRefusals, EmptyFieldNameK8) {
  expect_refused_before_head({"empty name", "GET / HTTP/1.1\r\n" + kHost + ": value\r\n\r\n", 400});
}

TEST(RequestRefusals, TransferEncodingTwiceAndObsFoldK9) {
  const std::string post = "POST / HTTP/1.1\r\n" + kHost;
  expect_refused_before_head(
      {"TE twice", post + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head(
      {"TE twice around a fold",
       post + "Transfer-Encoding: chunked\r\n \r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400});
  expect_refused_before_head({"fold with SP", "GET / HTTP/1.1\r\n" + kHost + "X-A: b\r\n  c\r\n\r\n", 400});
  expect_refused_before_head({"fold with HT", "GET / HTTP/1.1\r\n" + kHost + "X-A: b\r\n\tc\r\n\r\n", 400});
  expect_refused_before_head({"fold after an empty value", "GET / HTTP/1.1\r\n" + kHost + "X-A:\r\n c\r\n\r\n", 400});
  expect_refused_before_head({"first field line folded", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400});
}

TEST(RequestRefusals, BareLineEndsK7) {
  expect_refused_before_head({"LF after the request line", "GET / HTTP/1.1\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"LF as the empty line", "GET / HTTP/1.1\r\n" + kHost + "\n", 400});
  expect_refused_before_head({"LF before the request line", "\nGET / HTTP/1.1\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"CR before the request line", "\rGET / HTTP/1.1\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"CR LF LF before the request line", "\r\n\nGET / HTTP/1.1\r\n" + kHost + "\r\n", 400});
}

// RFC 9112 §2.2: empty lines (CRLF) before a request line are ignored, a bare LF is not a line.
TEST_F(RequestFixture, EmptyLinesBeforeARequestAreIgnored) {
  auto out = parser.execute("\r\n\r\nGET / HTTP/1.1\r\n" + kHost + "\r\n");
  ASSERT_EQ(out.state, Parser::State::kPaused) << parser.error_reason();
  EXPECT_EQ(rec.heads, std::vector<std::string>{"GET /"});
}

// The empty line after the last chunk (and trailers): llhttp takes a bare LF there. The head has
// gone on by then; the request is refused before it ends.
TEST(RequestRefusals, BareLfEndingTheTrailersK7) {
  for (const char* tail : {"0\r\n\n", "0\r\nX-Trailer: y\r\n\n", "5\r\nhello\r\n0\r\n\n"}) {
    SCOPED_TRACE(tail);
    Recorder rec;
    Parser parser(Parser::Kind::kRequest, {}, &rec);
    rec.parser = &parser;
    auto out = parser.execute("POST / HTTP/1.1\r\n" + kHost + "Transfer-Encoding: chunked\r\n\r\n" + tail);
    EXPECT_EQ(out.state, Parser::State::kError);
    EXPECT_EQ(parser.error_status(), 400);
    EXPECT_EQ(rec.messages, 0);
  }
}

TEST_F(RequestFixture, ChunkedBodyWithTrailersByteByByte) {
  const std::string req = "POST /u HTTP/1.1\r\n" + kHost +
                          "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nh\r\nl\n\r\n1\r\n\r\r\n0\r\nX-T: y\r\n\r\n";
  Parser::State state = Parser::State::kNeedMore;
  for (size_t i = 0; i < req.size(); ++i) {
    state = parser.execute(std::string_view(req).substr(i, 1)).state;
    if (state != Parser::State::kNeedMore) break;
  }
  ASSERT_EQ(state, Parser::State::kPaused) << parser.error_reason();
  EXPECT_EQ(rec.body, "h\r\nl\n\r");  // CR and LF in chunk data are data, not line ends
}

// Trailer fields are dropped, and never written into the head the finished views point into.
TEST_F(RequestFixture, TrailersLeaveTheHeadAlone) {
  const std::string req = "POST /u HTTP/1.1\r\n" + kHost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: " +
                          std::string(4000, 'y') + "\r\n\r\n";
  ASSERT_EQ(parser.execute(req).state, Parser::State::kPaused) << parser.error_reason();
  const RequestHead& head = parser.request();
  const char* begin = head.storage.data();
  EXPECT_GE(head.method.data(), begin);
  EXPECT_LE(head.target.data() + head.target.size(), begin + head.storage.size());
  EXPECT_EQ(head.method, "POST");
  EXPECT_FALSE(head.header("x-t").has_value());
}

TEST_F(RequestFixture, TrailerWithAnEmptyNameIsRefused) {
  const std::string req = "POST /u HTTP/1.1\r\n" + kHost + "Transfer-Encoding: chunked\r\n\r\n0\r\n: y\r\n\r\n";
  EXPECT_EQ(parser.execute(req).state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 400);
  EXPECT_EQ(rec.messages, 0);
}

TEST_F(RequestFixture, TrailersAreBoundedByTheHeadLimit) {
  const std::string req = "POST /u HTTP/1.1\r\n" + kHost + "Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: " +
                          std::string(20000, 'y') + "\r\n\r\n";
  EXPECT_EQ(parser.execute(req).state, Parser::State::kError);
  EXPECT_EQ(parser.error_status(), 431);
}

// RFC 9112 §3.2.2: the host of an absolute-form target wins over Host; origin-form goes on.
TEST(AbsoluteForm, TargetBecomesOriginFormAndHostComesFromIt) {
  struct Case {
    std::string request;
    const char* target;
    const char* path;
    const char* host;
  };
  const Case cases[] = {
      {"GET http://Other:8080/a/b?c=d HTTP/1.1\r\nHost: x\r\n\r\n", "/a/b?c=d", "/a/b", "Other:8080"},
      {"GET HTTPS://other?c=d HTTP/1.1\r\nHost: x\r\n\r\n", "/?c=d", "/", "other"},
      {"GET http://other HTTP/1.1\r\nHost: other\r\n\r\n", "/", "/", "other"},
      {"GET http://other/ HTTP/1.0\r\n\r\n", "/", "/", "other"},  // 1.0 without Host: one is added
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.request);
    Recorder rec;
    Parser parser(Parser::Kind::kRequest, {}, &rec);
    rec.parser = &parser;
    ASSERT_EQ(parser.execute(c.request).state, Parser::State::kPaused) << parser.error_reason();
    const RequestHead& head = parser.request();
    EXPECT_EQ(head.target, c.target);
    EXPECT_EQ(head.path, c.path);
    int hosts = 0;
    for (const auto& h : head.headers) hosts += iequals(h.name, "host") ? 1 : 0;
    EXPECT_EQ(hosts, 1);
    EXPECT_EQ(head.header("host").value_or(""), c.host);
  }
}

TEST(AbsoluteForm, OtherTargetsAreRefused) {
  expect_refused_before_head({"userinfo", "GET http://u@other/ HTTP/1.1\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"no host", "GET http:///a HTTP/1.1\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"other scheme", "GET ftp://other/ HTTP/1.1\r\n" + kHost + "\r\n", 400});
  expect_refused_before_head({"asterisk outside OPTIONS", "GET * HTTP/1.1\r\n" + kHost + "\r\n", 400});
}

TEST_F(RequestFixture, OptionsAsteriskIsAccepted) {
  ASSERT_EQ(parser.execute("OPTIONS * HTTP/1.1\r\n" + kHost + "\r\n").state, Parser::State::kPaused);
  EXPECT_EQ(rec.heads, std::vector<std::string>{"OPTIONS *"});
}

// A request refused after a good one on the same connection: the parser's line checks restart
// with every message.
TEST_F(RequestFixture, RefusalAfterAPipelinedGoodRequest) {
  const std::string two = "GET /a HTTP/1.1\r\n" + kHost + "\r\nGET /b HTTP/1.1\r\n" + kHost + "X: y\r\n z\r\n\r\n";
  auto out = parser.execute(two);
  ASSERT_EQ(out.state, Parser::State::kPaused);
  parser.resume();
  out = parser.execute(std::string_view(two).substr(out.consumed));
  EXPECT_EQ(out.state, Parser::State::kError);
  EXPECT_EQ(rec.heads, std::vector<std::string>{"GET /a"});
}

}  // namespace limpet::http
