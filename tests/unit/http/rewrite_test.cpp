#include "limpet/http/rewrite.hpp"

#include <gtest/gtest.h>

#include "limpet/http/parser.hpp"

namespace limpet::http {
namespace {

struct Collect : ParserDelegate {
  bool on_head() override { return false; }
  bool on_body(std::string_view) override { return true; }
  void on_message_end() override {}
};

std::unique_ptr<RequestHead> parse_request(const std::string& text) {
  Collect c;
  Parser p(Parser::Kind::kRequest, {}, &c);
  p.execute(text);
  return p.take_request();
}

TEST(Rewrite, RemovesHopByHopAndAddsForwardedHeaders) {
  auto head = parse_request(
      "GET /x?y=1 HTTP/1.1\r\nHost: app.example\r\nConnection: keep-alive, X-Secret\r\n"
      "Keep-Alive: timeout=5\r\nTE: trailers\r\nTrailer: X-T\r\nProxy-Authorization: Basic x\r\n"
      "X-Secret: 42\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n");
  ASSERT_TRUE(head);
  std::string out;
  build_request_head(*head, {"127.0.0.1", false, false}, &out);
  EXPECT_TRUE(out.starts_with("GET /x?y=1 HTTP/1.1\r\n"));
  EXPECT_NE(out.find("Host: app.example\r\n"), std::string::npos);
  EXPECT_NE(out.find("Accept: */*\r\n"), std::string::npos);
  for (const char* gone : {"Connection:", "Keep-Alive:", "TE:", "Trailer:", "Proxy-Authorization:",
                           "X-Secret:", "X-Forwarded-Proto: https"}) {
    EXPECT_EQ(out.find(gone), std::string::npos) << gone;
  }
  EXPECT_NE(out.find("X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n"), std::string::npos);
  EXPECT_NE(out.find("X-Forwarded-Proto: http\r\n"), std::string::npos);
  EXPECT_NE(out.find("X-Forwarded-Host: app.example\r\n"), std::string::npos);
  EXPECT_TRUE(out.ends_with("\r\n\r\n"));
}

// Every Connection header counts, not only the first (RFC 9110 §7.6.1: a list may be split).
TEST(Rewrite, HeadersNamedInAnyConnectionHeaderAreRemoved) {
  auto head = parse_request(
      "GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nX-A: 1\r\nconnection: x-a , X-C\r\n"
      "X-B: 2\r\nX-C: 3\r\n\r\n");
  ASSERT_TRUE(head);
  std::string out;
  build_request_head(*head, {"127.0.0.1", false, false}, &out);
  EXPECT_EQ(out.find("X-A:"), std::string::npos);
  EXPECT_EQ(out.find("X-C:"), std::string::npos);
  EXPECT_NE(out.find("X-B: 2\r\n"), std::string::npos);
}

TEST(Rewrite, WebSocketUpgradeKeepsUpgradeHeaders) {
  auto head = parse_request(
      "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
  ASSERT_TRUE(head && head->websocket);
  std::string out;
  build_request_head(*head, {"::1", true, true}, &out);
  EXPECT_NE(out.find("Connection: Upgrade\r\nUpgrade: websocket\r\n"), std::string::npos);
  EXPECT_NE(out.find("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"), std::string::npos);
  EXPECT_NE(out.find("X-Forwarded-Proto: https\r\n"), std::string::npos);
  EXPECT_NE(out.find("Forwarded: for=\"[::1]\";proto=https;host=\"h\"\r\n"), std::string::npos);
}

TEST(Rewrite, ChunkedRequestStaysChunked) {
  auto head = parse_request("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
  ASSERT_TRUE(head);
  std::string out;
  build_request_head(*head, {"1.2.3.4", false, false}, &out);
  EXPECT_NE(out.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
}

TEST(Rewrite, ResponseHeadForChunkedClientDropsContentLengthAndAddsCookie) {
  ResponseHead head;
  head.status = 200;
  head.reason = "OK";
  head.headers = {{"Content-Type", "text/plain"}, {"Connection", "keep-alive"},
                  {"Keep-Alive", "timeout=5"}};
  std::string out;
  build_response_head(head, {BodyFraming::kChunked, true, false, "lb=abc; Path=/"}, &out);
  EXPECT_EQ(out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: lb=abc; Path=/\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
}

// An empty Upgrade names no protocol: passed on first, it hid the upgrade from the client's parser
// (fuzz-response: a 101 with "Upgrade: " before "Upgrade: kozzewscbet" re-parsed as no tunnel).
TEST(Rewrite, UpgradeResponseNamesTheFirstNonEmptyProtocol) {
  ResponseHead head;
  head.status = 101;
  head.reason = "Switching Protocols";
  head.headers = {{"Upgrade", " "}, {"Upgrade", "websocket"}, {"Connection", "Upgrade"}};
  ResponseHeadOptions options;
  options.upgrade = true;
  std::string out;
  build_response_head(head, options, &out);
  EXPECT_EQ(out, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
  head.headers = {{"Upgrade", ""}, {"Connection", "Upgrade"}};
  build_response_head(head, options, &out);
  EXPECT_EQ(out, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
}

TEST(Rewrite, SimpleResponseIsComplete) {
  std::string r = simple_response(503, true);
  EXPECT_TRUE(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  EXPECT_NE(r.find("Content-Length: 20\r\n"), std::string::npos);
  EXPECT_TRUE(r.ends_with("\r\n\r\nService Unavailable\n"));
}

}  // namespace
}  // namespace limpet::http

// Node's HTTP server announces when it closes an idle connection: limpet's pool closes it first.
TEST(KeepAliveHeader, TimeoutParameterInSeconds) {
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("timeout=5"), 5u);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("max=100, Timeout = 30"), 30u);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s(" timeout=0 , max=5"), 0u);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("max=100"), std::nullopt);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("timeout=5s"), std::nullopt);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("timeout="), std::nullopt);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s("timeout=-1"), std::nullopt);
  EXPECT_EQ(limpet::http::keep_alive_timeout_s(""), std::nullopt);
}
