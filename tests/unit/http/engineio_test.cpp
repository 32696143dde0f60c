// Engine.IO handshake parsing (v4, v3, trailing packets, garbage, truncation, size cap) and the
// `io` Set-Cookie.
#include "limpet/http/engineio.hpp"

#include <gtest/gtest.h>

namespace limpet::http::engineio {
namespace {

constexpr std::string_view kV4 =
    R"(0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000})";
constexpr std::string_view kV3 =
    R"(96:0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}2:40)";

HandshakeStatus status(std::string_view body) { return parse_handshake(body).status; }

TEST(Handshake, V4) {
  auto r = parse_handshake(kV4);
  EXPECT_EQ(r.status, HandshakeStatus::kFound);
  EXPECT_EQ(r.sid, "lv_VI97HAXpY6yYWAAAC");
  EXPECT_EQ(parse_handshake_sid(kV4), "lv_VI97HAXpY6yYWAAAC");
}

TEST(Handshake, V3WithTrailingPackets) {
  auto r = parse_handshake(kV3);
  EXPECT_EQ(r.status, HandshakeStatus::kFound);
  EXPECT_EQ(r.sid, "lv_VI97HAXpY6yYWAAAC");
  // The declared length (96) is that of the open packet; the "2:40" connect packet follows.
  EXPECT_EQ(std::string_view(kV3).substr(3, 96).back(), '}');
  EXPECT_EQ(parse_handshake_sid(R"(40:0{"sid":"abc","upgrades":[],"pingTimeout":1})"), "abc");
}

TEST(Handshake, SidNotFirstWhitespaceAndEscapes) {
  EXPECT_EQ(parse_handshake_sid(R"(0{"upgrades":["websocket","x"],"pingInterval":25000,"sid":"abc"})"), "abc");
  EXPECT_EQ(parse_handshake_sid("0 {\n  \"sid\" :\t\"abc\" ,\"x\":1}"), "abc");
  EXPECT_EQ(parse_handshake_sid(R"(0{"nested":{"sid":"inner","a":[1,{"b":null}]},"sid":"outer"})"), "outer");
  EXPECT_EQ(parse_handshake_sid(R"(0{"s\u0069d":"a\u0062c"})"), "abc");  // escaped key and value
  EXPECT_EQ(parse_handshake_sid(R"(0{"x":"a \"quoted\" \\ value","sid":"ok"})"), "ok");
  EXPECT_EQ(parse_handshake_sid(R"(0{"n":-1.5e+3,"t":true,"f":false,"z":null,"sid":"ok"})"), "ok");
  EXPECT_EQ(parse_handshake_sid(R"(0{"sid":"first","sid":"second"})"), "first");
}

TEST(Handshake, RejectsBadSids) {
  EXPECT_EQ(status(R"(0{"sid":""})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":"has space"})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":"semi;colon"})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":"a\/b"})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":"caf\u00e9"})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status("0{\"sid\":\"caf\xC3\xA9\"}"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":123})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status(R"(0{"sid":null})"), HandshakeStatus::kInvalid);
  EXPECT_EQ(status("0{\"sid\":\"" + std::string(129, 'a') + "\"}"), HandshakeStatus::kInvalid);
  EXPECT_EQ(parse_handshake_sid("0{\"sid\":\"" + std::string(128, 'a') + "\"}"), std::string(128, 'a'));
}

TEST(Handshake, Garbage) {
  for (std::string_view body : {
           std::string_view("<html>502 Bad Gateway</html>"),
           std::string_view(R"({"sid":"abc"})"),                     // no packet type
           std::string_view(R"(4{"sid":"abc"})"),                    // message, not open
           std::string_view(R"(0["sid","abc"])"),                    // not an object
           std::string_view(R"(0{"upgrades":[],"pingInterval":1})"),  // no sid at all
           std::string_view(R"(0{sid:"abc"})"),                      // unquoted key
           std::string_view(R"(0{"a" "sid":"abc"})"),                // missing colon
           std::string_view(R"(0{"a":1 "sid":"abc"})"),              // missing comma
           std::string_view(R"(0{"a":tru,"sid":"abc"})"),            // bad literal
           std::string_view(R"(0{"a":"\x","sid":"abc"})"),           // bad escape
           std::string_view("0{\"a\":\"line\nbreak\",\"sid\":\"abc\"}"),  // raw control char
           std::string_view(R"(96x0{"sid":"abc"})"),                 // v3 length without ':'
           std::string_view(R"(5:0{"sid":"abcdef"})"),               // v3 length cuts the object
           std::string_view(R"(2:40)"),                              // v3, first packet not open
           std::string_view(R"(123456789:0{"sid":"abc"})"),          // absurd v3 length
           std::string_view(R"(___eio[0]("0{\"sid\":\"abc\"}");)"),  // JSONP
           std::string_view("\x00\x09\xff" "0{\"sid\":\"abc\"}", 18),   // v3 binary framing
       }) {
    EXPECT_EQ(status(body), HandshakeStatus::kInvalid) << body;
  }
}

TEST(Handshake, EveryTruncationNeedsMore) {
  for (std::string_view full : {kV4, kV3}) {
    const size_t sid_end = full.find("AAAC\"") + 5;  // the sid's closing quote included
    for (size_t n = 0; n < full.size(); ++n) {
      auto r = parse_handshake(full.substr(0, n));
      if (n < sid_end) {
        ASSERT_EQ(r.status, HandshakeStatus::kNeedMore) << full.substr(0, n);
      } else {
        ASSERT_EQ(r.status, HandshakeStatus::kFound) << full.substr(0, n);
        ASSERT_EQ(r.sid, "lv_VI97HAXpY6yYWAAAC");
      }
    }
  }
  // Inside values that come before the sid.
  EXPECT_EQ(status(R"(0{"pingInterval":25)"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status(R"(0{"t":tr)"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status(R"(0{"u":["web)"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status(R"(0{"u":"\u00)"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status(R"(0{"u":"\)"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status("9"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status("96:"), HandshakeStatus::kNeedMore);
  EXPECT_EQ(status(""), HandshakeStatus::kNeedMore);
}

TEST(Handshake, HugeBodiesStopAtTheCap) {
  // A sid after kMaxHandshakeBody bytes of padding is never waited for.
  std::string padding = "0{\"pad\":\"" + std::string(kMaxHandshakeBody, 'x');
  EXPECT_EQ(status(padding), HandshakeStatus::kInvalid);
  std::string just_under = "0{\"pad\":\"" + std::string(100, 'x');
  EXPECT_EQ(status(just_under), HandshakeStatus::kNeedMore);
  // A sid found early is found however long the rest is.
  std::string big = "0{\"sid\":\"abc\",\"pad\":\"" + std::string(100000, 'x') + "\"}";
  EXPECT_EQ(parse_handshake_sid(big), "abc");
  // Deep nesting is refused rather than recursed into.
  std::string deep = "0{\"a\":" + std::string(1000, '[');
  EXPECT_EQ(status(deep), HandshakeStatus::kInvalid);
}

TEST(SetCookie, IoCookie) {
  EXPECT_EQ(sid_from_set_cookie("io=lv_VI97HAXpY6yYWAAAC; Path=/; HttpOnly; SameSite=Lax"), "lv_VI97HAXpY6yYWAAAC");
  EXPECT_EQ(sid_from_set_cookie("io=abc"), "abc");
  EXPECT_EQ(sid_from_set_cookie(" io = \"abc\" ;Path=/"), "abc");
  EXPECT_EQ(sid_from_set_cookie("session=abc; Path=/"), std::nullopt);
  EXPECT_EQ(sid_from_set_cookie("IO=abc"), std::nullopt);
  EXPECT_EQ(sid_from_set_cookie("io=; Path=/"), std::nullopt);
  EXPECT_EQ(sid_from_set_cookie("io=a b"), std::nullopt);
  EXPECT_EQ(sid_from_set_cookie("io"), std::nullopt);
  EXPECT_EQ(sid_from_set_cookie("io=abc; Max-Age=0"), std::nullopt);   // deletion
  EXPECT_EQ(sid_from_set_cookie("io=abc; max-age=-1"), std::nullopt);  // deletion
  EXPECT_EQ(sid_from_set_cookie("io=abc; Max-Age=3600"), "abc");
  EXPECT_EQ(sid_from_set_cookie("eio=abc", "eio"), "abc");
  EXPECT_EQ(sid_from_set_cookie("other=x; io=abc"), std::nullopt);  // attributes, not a second cookie
}

}  // namespace
}  // namespace limpet::http::engineio
