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
}  // namespace limpet::http
