// Sticky key extraction: every source, malformed input, percent-encoding, repeated parameters,
// trusted-proxy X-Forwarded-For.
#include "limpet/balancer/sticky_key.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

namespace limpet::balancer {
namespace {

using config::HashKeySource;

// A request head whose views point at string literals (allowed by message.hpp).
http::RequestHead request(std::string_view path, std::string_view query, std::vector<http::Header> headers = {}) {
  http::RequestHead h;
  h.method = "GET";
  h.path = path;
  h.query = query;
  h.target = path;
  h.headers = std::move(headers);
  return h;
}

const std::vector<std::string> kEio = {"/socket.io/"};

TEST(PercentDecode, EscapesPlusAndMalformed) {
  EXPECT_EQ(percent_decode("a%20b+c", true), "a b c");
  EXPECT_EQ(percent_decode("a%20b+c", false), "a b+c");
  EXPECT_EQ(percent_decode("%41%6a%6A", true), "Ajj");
  EXPECT_EQ(percent_decode("100%", true), "100%");
  EXPECT_EQ(percent_decode("%4", true), "%4");
  EXPECT_EQ(percent_decode("%zz%4g", true), "%zz%4g");
  EXPECT_EQ(percent_decode("%%41", true), "%A");
  EXPECT_EQ(percent_decode("", true), "");
}

TEST(QueryParam, BasicAndPositions) {
  EXPECT_EQ(query_param("sid=abc", "sid"), "abc");
  EXPECT_EQ(query_param("EIO=4&transport=polling&sid=abc&t=Nx1", "sid"), "abc");
  EXPECT_EQ(query_param("EIO=4&transport=polling&t=Nx1", "sid"), std::nullopt);
  EXPECT_EQ(query_param("", "sid"), std::nullopt);
  EXPECT_EQ(query_param("xsid=1&sidx=2", "sid"), std::nullopt);  // whole names only
  EXPECT_EQ(query_param("SID=1", "sid"), std::nullopt);           // names are case-sensitive
}

TEST(QueryParam, RepeatedFirstWins) {
  EXPECT_EQ(query_param("sid=a&sid=b", "sid"), "a");
  EXPECT_EQ(query_param("room=1&x=2&room=3", "room"), "1");
  // The first occurrence decides even when it is empty: an empty value is absent.
  EXPECT_EQ(query_param("sid=&sid=b", "sid"), std::nullopt);
}

TEST(QueryParam, MalformedQueryStrings) {
  EXPECT_EQ(query_param("a&&=b&sid", "sid"), std::nullopt);
  EXPECT_EQ(query_param("a&&=b&sid=x", "sid"), "x");
  EXPECT_EQ(query_param("&&&sid=x&&", "sid"), "x");
  EXPECT_EQ(query_param("=&=x&sid==y", "sid"), "=y");  // value is everything after the first '='
  EXPECT_EQ(query_param("sid", "sid"), std::nullopt);
  EXPECT_EQ(query_param("sid=", "sid"), std::nullopt);
  EXPECT_EQ(query_param("=sid", "sid"), std::nullopt);
  EXPECT_EQ(query_param("a=1;sid=2", "sid"), std::nullopt);  // ';' is not a separator
  EXPECT_EQ(query_param("room=%", "room"), "%");
}

TEST(QueryParam, PercentEncodedNamesAndValues) {
  EXPECT_EQ(query_param("s%69d=ab%2Dc", "sid"), "ab-c");
  EXPECT_EQ(query_param("room=a+b%2Bc", "room"), "a b+c");
  EXPECT_EQ(query_param("my+room=1", "my room"), "1");
  EXPECT_EQ(query_param("room=%E2%9C%93", "room"), "\xE2\x9C\x93");
  EXPECT_EQ(query_param("room=%00", "room"), std::string(1, '\0'));
}

TEST(EngineIoPath, PrefixMatching) {
  EXPECT_TRUE(is_engineio_path("/socket.io/", kEio));
  EXPECT_TRUE(is_engineio_path("/socket.io", kEio));  // addTrailingSlash: false
  EXPECT_TRUE(is_engineio_path("/socket.io/x", kEio));
  EXPECT_FALSE(is_engineio_path("/socket.iox", kEio));
  EXPECT_FALSE(is_engineio_path("/", kEio));
  EXPECT_FALSE(is_engineio_path("/api/socket.io/", kEio));
  EXPECT_FALSE(is_engineio_path("/socket.io/", {}));
  const std::vector<std::string> two = {"/socket.io/", "/engine.io"};
  EXPECT_TRUE(is_engineio_path("/engine.io", two));
  EXPECT_TRUE(is_engineio_path("/engine.io/", two));
  EXPECT_FALSE(is_engineio_path("/engine.iox", two));
}

TEST(EngineIoSid, OnlyOnConfiguredPaths) {
  EXPECT_EQ(engineio_sid(request("/socket.io/", "EIO=4&transport=polling&sid=Xyz_-1"), kEio), "Xyz_-1");
  EXPECT_EQ(engineio_sid(request("/socket.io/", "EIO=4&transport=polling&t=abc"), kEio), std::nullopt);
  EXPECT_EQ(engineio_sid(request("/other/", "sid=abc"), kEio), std::nullopt);
  EXPECT_EQ(engineio_sid(request("/socket.io/", ""), kEio), std::nullopt);
  EXPECT_EQ(engineio_sid(request("/socket.io/", "EIO=4&sid="), kEio), std::nullopt);
  EXPECT_EQ(engineio_sid(request("/socket.io/", "EIO=4&sid=a%2Fb"), kEio), "a/b");
}

TEST(HeaderValue, CaseInsensitiveFirstTrimmed) {
  auto h = request("/", "", {{"X-Room", " 42 "}, {"x-room", "43"}, {"X-Empty", ""}, {"X-Blank", "  "}});
  EXPECT_EQ(header_value(h, "x-room"), "42");
  EXPECT_EQ(header_value(h, "X-ROOM"), "42");
  EXPECT_EQ(header_value(h, "x-empty"), std::nullopt);
  EXPECT_EQ(header_value(h, "x-blank"), std::nullopt);
  EXPECT_EQ(header_value(h, "x-missing"), std::nullopt);
}

TEST(Cookie, ParsingVariants) {
  EXPECT_EQ(cookie_in("a=1; b=2", "b"), "2");
  EXPECT_EQ(cookie_in("a=1;b=2", "b"), "2");
  EXPECT_EQ(cookie_in("  a = 1 ;   b =  2  ", "b"), "2");
  EXPECT_EQ(cookie_in("a=\"quoted value\"; b=2", "a"), "quoted value");
  EXPECT_EQ(cookie_in("a=\"\"", "a"), std::nullopt);
  EXPECT_EQ(cookie_in("a=", "a"), std::nullopt);
  EXPECT_EQ(cookie_in("flag; a=1", "a"), "1");
  EXPECT_EQ(cookie_in("ab=1; a=2", "a"), "2");
  EXPECT_EQ(cookie_in("A=1", "a"), std::nullopt);  // cookie names are case-sensitive
  EXPECT_EQ(cookie_in("a=1=2", "a"), "1=2");
  EXPECT_EQ(cookie_in("a=1; a=2", "a"), "1");
  EXPECT_EQ(cookie_in(";;; a=1 ;;", "a"), "1");
  EXPECT_EQ(cookie_in("", "a"), std::nullopt);
}

TEST(Cookie, SeveralCookieHeaders) {
  auto h = request("/", "", {{"Cookie", "x=1"}, {"cookie", "io=abc; room=7"}, {"COOKIE", "room=8"}});
  EXPECT_EQ(cookie_value(h, "room"), "7");
  EXPECT_EQ(cookie_value(h, "io"), "abc");
  EXPECT_EQ(cookie_value(h, "x"), "1");
  EXPECT_EQ(cookie_value(h, "y"), std::nullopt);
  auto empty_first = request("/", "", {{"Cookie", "room="}, {"Cookie", "room=8"}});
  EXPECT_EQ(cookie_value(empty_first, "room"), std::nullopt);
}

TEST(ParseIp, Forms) {
  auto v4 = parse_ip("10.1.2.3");
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->family, AF_INET);
  EXPECT_EQ(to_string(*v4), "10.1.2.3");
  EXPECT_EQ(to_string(*parse_ip(" 10.1.2.3:8080 ")), "10.1.2.3");
  EXPECT_EQ(to_string(*parse_ip("::1")), "::1");
  EXPECT_EQ(to_string(*parse_ip("[::1]")), "::1");
  EXPECT_EQ(to_string(*parse_ip("[2001:DB8::1]:443")), "2001:db8::1");
  EXPECT_EQ(to_string(*parse_ip("::ffff:192.0.2.1")), "192.0.2.1");  // mapped: same client
  EXPECT_FALSE(parse_ip("unknown"));
  EXPECT_FALSE(parse_ip(""));
  EXPECT_FALSE(parse_ip("1.2.3"));
  EXPECT_FALSE(parse_ip("1.2.3.4:http"));
  EXPECT_FALSE(parse_ip("[::1"));
  EXPECT_FALSE(parse_ip("[::1]x"));
  EXPECT_FALSE(parse_ip("_hidden"));
  // inet_pton stops at a NUL; the text after it must not be ignored (found by fuzz_sticky_key).
  using namespace std::string_view_literals;
  EXPECT_FALSE(parse_ip("10.0.0.1\0junk"sv));
  EXPECT_FALSE(parse_ip("::1\0"sv));
}

TEST(CidrSet, ParseAndContains) {
  auto set = CidrSet::parse({"10.0.0.0/8", "192.168.1.7", "fd00::/8", "::ffff:172.16.0.0/108"});
  ASSERT_TRUE(set.is_ok()) << set.message();
  EXPECT_TRUE(set->contains(*parse_ip("10.255.0.1")));
  EXPECT_FALSE(set->contains(*parse_ip("11.0.0.1")));
  EXPECT_TRUE(set->contains(*parse_ip("192.168.1.7")));
  EXPECT_FALSE(set->contains(*parse_ip("192.168.1.8")));
  EXPECT_TRUE(set->contains(*parse_ip("fd12::1")));
  EXPECT_FALSE(set->contains(*parse_ip("fe80::1")));
  EXPECT_TRUE(set->contains(*parse_ip("172.16.9.9")));  // from the mapped /108 = /12
  EXPECT_FALSE(set->contains(*parse_ip("172.32.0.1")));
  EXPECT_TRUE(set->contains(*parse_ip("::ffff:10.0.0.1")));
  EXPECT_FALSE(CidrSet::parse({"10.0.0.0/33"}).is_ok());
  EXPECT_FALSE(CidrSet::parse({"nonsense"}).is_ok());
  EXPECT_FALSE(CidrSet::parse({"10.0.0.0/x"}).is_ok());
  EXPECT_FALSE(CidrSet::parse({std::string("::fff\0\0\0\xcf.0.0.0/104", 19)}).is_ok());
  auto zero = CidrSet::parse({"0.0.0.0/0"});
  EXPECT_TRUE(zero->contains(*parse_ip("8.8.8.8")));
  EXPECT_FALSE(zero->contains(*parse_ip("::1")));
}

TEST(ClientAddress, UntrustedPeerIgnoresForwardedFor) {
  auto trusted = *CidrSet::parse({"10.0.0.0/8"});
  auto h = request("/", "", {{"X-Forwarded-For", "1.1.1.1"}});
  EXPECT_EQ(client_address(h, "203.0.113.9", trusted), "203.0.113.9");
  EXPECT_EQ(client_address(h, "203.0.113.9", CidrSet()), "203.0.113.9");
  EXPECT_EQ(client_address(h, "::ffff:203.0.113.9", trusted), "203.0.113.9");
  EXPECT_EQ(client_address(h, "not-an-ip", trusted), "not-an-ip");
}

TEST(ClientAddress, TrustedPeerWalksRightToLeft) {
  auto trusted = *CidrSet::parse({"10.0.0.0/8", "192.168.0.0/16"});
  // client, spoofed hop added by the client, then our proxies.
  auto h = request("/", "", {{"X-Forwarded-For", "6.6.6.6, 1.2.3.4, 192.168.0.5"}});
  EXPECT_EQ(client_address(h, "10.0.0.1", trusted), "1.2.3.4");
  // Several headers form one list, in order.
  auto two = request("/", "", {{"X-Forwarded-For", "6.6.6.6, 1.2.3.4"}, {"x-forwarded-for", "10.9.9.9"}});
  EXPECT_EQ(client_address(two, "10.0.0.1", trusted), "1.2.3.4");
  // Everything trusted: the left-most hop.
  auto all = request("/", "", {{"X-Forwarded-For", "10.1.1.1, 10.2.2.2"}});
  EXPECT_EQ(client_address(all, "10.0.0.1", trusted), "10.1.1.1");
  // Garbage stops the walk at the last address we could believe.
  auto junk = request("/", "", {{"X-Forwarded-For", "1.2.3.4, unknown, 10.2.2.2"}});
  EXPECT_EQ(client_address(junk, "10.0.0.1", trusted), "10.2.2.2");
  auto junk_last = request("/", "", {{"X-Forwarded-For", "1.2.3.4, garbage"}});
  EXPECT_EQ(client_address(junk_last, "10.0.0.1", trusted), "10.0.0.1");
  // No header at all: the peer.
  EXPECT_EQ(client_address(request("/", ""), "10.0.0.1", trusted), "10.0.0.1");
  // Ports, brackets, blanks and empty elements.
  auto ports = request("/", "", {{"X-Forwarded-For", " [2001:db8::7]:5000 , , 192.168.3.3:80 "}});
  EXPECT_EQ(client_address(ports, "10.0.0.1", trusted), "2001:db8::7");
}

TEST(ExtractKey, EverySourceAndFirstPresentWins) {
  auto trusted = *CidrSet::parse({});
  auto h = request("/chat", "room=42&user=", {{"X-Tenant", "acme"}, {"Cookie", "uid=u7"}});
  auto src = [](HashKeySource::Kind k, std::string name) {
    HashKeySource s;
    s.kind = k;
    s.name = std::move(name);
    return s;
  };
  using K = HashKeySource::Kind;
  EXPECT_EQ(extract_key(src(K::kQuery, "room"), h, "1.2.3.4", trusted), "42");
  EXPECT_EQ(extract_key(src(K::kQuery, "user"), h, "1.2.3.4", trusted), std::nullopt);
  EXPECT_EQ(extract_key(src(K::kHeader, "x-tenant"), h, "1.2.3.4", trusted), "acme");
  EXPECT_EQ(extract_key(src(K::kCookie, "uid"), h, "1.2.3.4", trusted), "u7");
  EXPECT_EQ(extract_key(src(K::kIp, ""), h, "1.2.3.4", trusted), "1.2.3.4");
  EXPECT_EQ(extract_key(src(K::kIp, ""), h, "", trusted), std::nullopt);

  std::vector<HashKeySource> list = {src(K::kQuery, "user"), src(K::kHeader, "x-none"),
                                     src(K::kCookie, "uid"), src(K::kIp, "")};
  auto k = first_key(list, h, "1.2.3.4", trusted);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->source, 2u);
  EXPECT_EQ(k->value, "u7");
  list.erase(list.begin() + 2);
  k = first_key(list, h, "1.2.3.4", trusted);
  ASSERT_TRUE(k);
  EXPECT_EQ(k->source, 2u);
  EXPECT_EQ(k->value, "1.2.3.4");
  EXPECT_FALSE(first_key({}, h, "1.2.3.4", trusted));
}

}  // namespace
}  // namespace limpet::balancer
