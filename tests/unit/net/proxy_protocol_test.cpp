// PROXY protocol v1/v2: every valid form, fed whole and split at every byte boundary, each
// malformation refused (as early as a byte tells), and the headers we build parse back.
#include "limpet/net/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <string>
#include <vector>

namespace limpet::net {
namespace {

using Status = ProxyParse::Status;

std::string v2(uint8_t ver_cmd, uint8_t fam, std::string_view block) {
  std::string s("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);
  s.push_back(static_cast<char>(ver_cmd));
  s.push_back(static_cast<char>(fam));
  s.push_back(static_cast<char>(block.size() >> 8));
  s.push_back(static_cast<char>(block.size() & 0xff));
  s.append(block);
  return s;
}

std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}

const std::string kV4Block = bytes({192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb});  // :56324, :443

std::string v6_block() {
  std::string b(36, '\0');
  inet_pton(AF_INET6, "2001:db8::1", b.data());
  inet_pton(AF_INET6, "2001:db8::2", b.data() + 16);
  b[32] = '\x30';  // 12345
  b[33] = '\x39';
  b[34] = '\x00';  // 80
  b[35] = '\x50';
  return b;
}

std::string text_of(const SocketAddress& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  uint16_t port;
  if (a.storage.ss_family == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a.storage);
    inet_ntop(AF_INET, &s->sin_addr, buf, sizeof buf);
    port = ntohs(s->sin_port);
  } else if (a.storage.ss_family == AF_INET6) {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof buf);
    port = ntohs(s->sin6_port);
  } else {
    return "?";
  }
  return std::string(buf) + "|" + std::to_string(port);
}

struct Valid {
  const char* name;
  std::string header;
  uint8_t version;
  bool has_addresses;
  std::string source;  // "ip|port" when has_addresses
  std::string destination;
};

std::vector<Valid> valid_headers() {
  std::string tlvs = kV4Block + bytes({0x04, 0x00, 0x02, 'h', 'i'}) + bytes({0x03, 0x00, 0x00});
  std::string unix_block(216, '\0');
  return {
      {"v1 tcp4", "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n", 1, true, "192.0.2.1|56324", "198.51.100.2|443"},
      {"v1 tcp6", "PROXY TCP6 2001:db8::1 ::1 0 65535\r\n", 1, true, "2001:db8::1|0", "::1|65535"},
      {"v1 tcp6 mapped", "PROXY TCP6 ::ffff:1.2.3.4 ::ffff:5.6.7.8 1 2\r\n", 1, true, "::ffff:1.2.3.4|1",
       "::ffff:5.6.7.8|2"},
      {"v1 unknown", "PROXY UNKNOWN\r\n", 1, false, "", ""},
      {"v1 unknown with rest", "PROXY UNKNOWN ffff::1 ::1 1 2\r\n", 1, false, "", ""},
      {"v1 longest", "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
                     "65535 65535\r\n",
       1, true, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff|65535", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff|65535"},
      {"v2 tcp4", v2(0x21, 0x11, kV4Block), 2, true, "192.0.2.1|56324", "198.51.100.2|443"},
      {"v2 tcp6", v2(0x21, 0x21, v6_block()), 2, true, "2001:db8::1|12345", "2001:db8::2|80"},
      {"v2 tcp4 with tlvs", v2(0x21, 0x11, tlvs), 2, true, "192.0.2.1|56324", "198.51.100.2|443"},
      {"v2 local", v2(0x20, 0x00, ""), 2, false, "", ""},
      {"v2 local with junk block", v2(0x20, 0x11, "xyz"), 2, false, "", ""},
      {"v2 proxy unspec", v2(0x21, 0x00, ""), 2, false, "", ""},
      {"v2 proxy unix", v2(0x21, 0x31, unix_block), 2, false, "", ""},
      {"v2 proxy udp4", v2(0x21, 0x12, kV4Block), 2, false, "", ""},
  };
}

void expect_header(const Valid& v, const ProxyHeader& h) {
  EXPECT_EQ(h.version, v.version) << v.name;
  EXPECT_EQ(h.has_addresses, v.has_addresses) << v.name;
  if (v.has_addresses) {
    EXPECT_EQ(text_of(h.source), v.source) << v.name;
    EXPECT_EQ(text_of(h.destination), v.destination) << v.name;
  }
}

TEST(ProxyProtocol, EveryValidFormParsesWhole) {
  for (const auto& v : valid_headers()) {
    ProxyHeader h;
    // What follows the header is not the parser's.
    const std::string wire = v.header + "GET / HTTP/1.1\r\n";
    ProxyParse r = parse_proxy_header(wire, &h);
    ASSERT_EQ(r.status, Status::kDone) << v.name << ": " << (r.error ? r.error : "");
    EXPECT_EQ(r.consumed, v.header.size()) << v.name;
    expect_header(v, h);
  }
}

TEST(ProxyProtocol, EveryPrefixNeedsMore) {
  for (const auto& v : valid_headers()) {
    for (size_t n = 0; n < v.header.size(); ++n) {
      ProxyHeader h;
      EXPECT_EQ(parse_proxy_header(std::string_view(v.header).substr(0, n), &h).status, Status::kNeedMore)
          << v.name << " at " << n;
    }
  }
}

// Split at every boundary (and into single bytes): the same header, and the bytes after it are
// exactly what the reader leaves unconsumed.
TEST(ProxyProtocol, ReaderSplitAtEveryByte) {
  const std::string payload = "\x16\x03\x01 TLS or HTTP";
  for (const auto& v : valid_headers()) {
    const std::string wire = v.header + payload;
    for (size_t cut = 1; cut < wire.size(); ++cut) {
      ProxyHeaderReader reader;
      ProxyParse r = reader.feed(std::string_view(wire).substr(0, cut));
      std::string rest;
      if (r.status == Status::kNeedMore) {
        ASSERT_LT(cut, v.header.size()) << v.name;
        r = reader.feed(std::string_view(wire).substr(cut));
        ASSERT_EQ(r.status, Status::kDone) << v.name << " cut " << cut;
        rest = wire.substr(cut + r.consumed);
      } else {
        ASSERT_EQ(r.status, Status::kDone) << v.name << " cut " << cut;
        ASSERT_GE(cut, v.header.size());
        rest = wire.substr(r.consumed, cut - r.consumed) + wire.substr(cut);
      }
      EXPECT_EQ(rest, payload) << v.name << " cut " << cut;
      expect_header(v, reader.header());
    }
    ProxyHeaderReader bytewise;
    ProxyParse r;
    size_t i = 0;
    for (; i < wire.size(); ++i) {
      r = bytewise.feed(std::string_view(wire).substr(i, 1));
      if (r.status != Status::kNeedMore) break;
    }
    ASSERT_EQ(r.status, Status::kDone) << v.name;
    EXPECT_EQ(i + 1, v.header.size()) << v.name;
    EXPECT_EQ(r.consumed, 1u);
    expect_header(v, bytewise.header());
  }
}

struct Bad {
  const char* name;
  std::string header;
  const char* reason;
};

std::vector<Bad> malformed_headers() {
  std::string long_unknown = "PROXY UNKNOWN " + std::string(100, 'x') + "\r\n";
  return {
      {"http request", "GET / HTTP/1.1\r\n\r\n", "no PROXY protocol header"},
      {"post request", "POST / HTTP/1.1\r\n", "no PROXY protocol header"},
      {"tls hello", "\x16\x03\x01\x02\x00", "no PROXY protocol header"},
      {"lower case", "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
      {"v1 no space", "PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "no PROXY protocol header"},
      {"v1 bad protocol", "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: bad protocol"},
      {"v1 unknownx", "PROXY UNKNOWNX\r\n", "v1: bad protocol"},
      {"v1 empty", "PROXY \r\n", "v1: bad protocol"},
      {"v1 double space", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "v1: expected four fields after the protocol, single spaces"},
      {"v1 trailing space", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1: expected four fields after the protocol, single spaces"},
      {"v1 missing port", "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1: expected four fields after the protocol, single spaces"},
      {"v1 extra field", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "v1: expected four fields after the protocol, single spaces"},
      {"v1 tab", "PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n", "v1: bad character"},
      {"v1 bare lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1: bad character"},
      {"v1 cr without lf", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1: CR without LF"},
      {"v1 tcp4 with v6", "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"v1 tcp6 with v4", "PROXY TCP6 ::1 5.6.7.8 1 2\r\n", "v1: bad destination address"},
      {"v1 short v4", "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"v1 v4 leading zero", "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"v1 v4 octet", "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"v1 bracketed v6", "PROXY TCP6 [::1] ::1 1 2\r\n", "v1: bad source address"},
      {"v1 port leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", "v1: bad source port"},
      {"v1 port too big", "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "v1: bad destination port"},
      {"v1 port sign", "PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "v1: bad source port"},
      {"v1 port hex", "PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n", "v1: bad destination port"},
      {"v1 port 6 digits", "PROXY TCP4 1.2.3.4 5.6.7.8 1 000002\r\n", "v1: bad destination port"},
      {"v1 too long", long_unknown, "v1: header too long"},
      {"v1 8 bit", "PROXY TCP4 1.2.3.4\xff 5.6.7.8 1 2\r\n", "v1: bad character"},
      {"v2 bad signature", v2(0x21, 0x11, kV4Block).replace(11, 1, "\x0B"), "no PROXY protocol header"},
      {"v2 version 1", v2(0x11, 0x11, kV4Block), "v2: unsupported version"},
      {"v2 version 3", v2(0x31, 0x11, kV4Block), "v2: unsupported version"},
      {"v2 command 2", v2(0x22, 0x11, kV4Block), "v2: unknown command"},
      {"v2 family 4", v2(0x21, 0x41, kV4Block), "v2: unknown address family"},
      {"v2 transport 3", v2(0x21, 0x13, kV4Block), "v2: unknown address family"},
      {"v2 short v4 block", v2(0x21, 0x11, kV4Block.substr(0, 11)), "v2: length does not cover the address block"},
      {"v2 short v6 block", v2(0x21, 0x21, kV4Block), "v2: length does not cover the address block"},
      {"v2 short unix block", v2(0x21, 0x31, std::string(215, '\0')), "v2: length does not cover the address block"},
      {"v2 too long", v2(0x21, 0x11, kV4Block + bytes({0x04, 0x0f, 0xf0}) + std::string(4080, 'x')),
       "v2: header too long"},
      {"v2 truncated tlv", v2(0x21, 0x11, kV4Block + bytes({0x04, 0x00})), "v2: truncated TLV"},
      {"v2 tlv overflow", v2(0x21, 0x11, kV4Block + bytes({0x04, 0x00, 0x03, 'a', 'b'})), "v2: TLV overflows the header"},
  };
}

TEST(ProxyProtocol, MalformedRefused) {
  for (const auto& b : malformed_headers()) {
    ProxyHeader h;
    ProxyParse r = parse_proxy_header(b.header + "GET / HTTP/1.1\r\n\r\n", &h);
    ASSERT_EQ(r.status, Status::kError) << b.name;
    EXPECT_STREQ(r.error, b.reason) << b.name;
    // Split anywhere, the reader comes to the same verdict.
    for (size_t cut = 1; cut < b.header.size(); ++cut) {
      ProxyHeaderReader reader;
      ProxyParse first = reader.feed(std::string_view(b.header).substr(0, cut));
      if (first.status == Status::kNeedMore) first = reader.feed(std::string_view(b.header).substr(cut));
      ASSERT_EQ(first.status, Status::kError) << b.name << " cut " << cut;
      EXPECT_STREQ(first.error, b.reason) << b.name << " cut " << cut;
    }
  }
}

// Refused as soon as a byte tells, without waiting for a CRLF or the declared length.
TEST(ProxyProtocol, RefusedEarly) {
  ProxyHeader h;
  EXPECT_EQ(parse_proxy_header("G", &h).status, Status::kError);
  EXPECT_EQ(parse_proxy_header("\x16", &h).status, Status::kError);
  EXPECT_EQ(parse_proxy_header("PR0", &h).status, Status::kError);
  EXPECT_EQ(parse_proxy_header(std::string("\r\n\r\n\x01", 5), &h).status, Status::kError);
  EXPECT_EQ(parse_proxy_header(v2(0x11, 0x11, "").substr(0, 13), &h).status, Status::kError);
  EXPECT_EQ(parse_proxy_header(v2(0x21, 0x51, "").substr(0, 14), &h).status, Status::kError);
  // A declared length past the bound is refused from the fixed 16 bytes.
  std::string huge = v2(0x21, 0x11, "").substr(0, 14) + "\xff\xff";
  EXPECT_STREQ(parse_proxy_header(huge, &h).error, "v2: header too long");
  // 106 bytes without CR: the LF could only be byte 108.
  EXPECT_STREQ(parse_proxy_header("PROXY UNKNOWN " + std::string(92, 'x'), &h).error, "v1: header too long");
  EXPECT_EQ(parse_proxy_header("PROXY UNKNOWN " + std::string(91, 'x'), &h).status, Status::kNeedMore);
  // The LF may be byte 107 exactly.
  const std::string exact = "PROXY UNKNOWN " + std::string(91, 'x') + "\r\n";
  ASSERT_EQ(exact.size(), kProxyV1MaxLength);
  EXPECT_EQ(parse_proxy_header(exact, &h).status, Status::kDone);
}

TEST(ProxyProtocol, GarbageNeverNeedsMoreForever) {
  std::string junk;
  uint32_t x = 12345;
  for (int i = 0; i < 20000; ++i) {
    x = x * 1103515245 + 12345;
    junk.push_back(static_cast<char>(x >> 16));
  }
  for (const char* start : {"PROXY ", "\r\n\r\n\0\r\nQUIT\n"}) {
    ProxyHeaderReader reader;
    ProxyParse r = reader.feed(std::string_view(start, start[0] == 'P' ? 6 : 12));
    for (size_t i = 0; i < junk.size() && r.status == Status::kNeedMore; i += 7) {
      r = reader.feed(std::string_view(junk).substr(i, 7));
    }
    EXPECT_NE(r.status, Status::kNeedMore);
  }
}

sockaddr_storage address(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  if (inet_pton(AF_INET, ip, &reinterpret_cast<sockaddr_in*>(&ss)->sin_addr) == 1) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    EXPECT_EQ(inet_pton(AF_INET6, ip, &s->sin6_addr), 1) << ip;
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
  }
  return ss;
}

struct Built {
  std::string header;
  ProxyHeader parsed;
};

Built build(ProxyVersion v, const char* src, uint16_t sport, const char* dst, uint16_t dport) {
  sockaddr_storage s = address(src, sport), d = address(dst, dport);
  Built b;
  append_proxy_header(v, reinterpret_cast<sockaddr*>(&s), reinterpret_cast<sockaddr*>(&d), &b.header);
  ProxyParse r = parse_proxy_header(b.header, &b.parsed);
  EXPECT_EQ(r.status, Status::kDone) << (r.error ? r.error : "");
  EXPECT_EQ(r.consumed, b.header.size());
  return b;
}

TEST(ProxyProtocol, BuiltHeadersParseBack) {
  for (ProxyVersion v : {ProxyVersion::kV1, ProxyVersion::kV2}) {
    Built four = build(v, "127.0.0.2", 40000, "127.0.0.1", 8080);
    EXPECT_EQ(text_of(four.parsed.source), "127.0.0.2|40000");
    EXPECT_EQ(text_of(four.parsed.destination), "127.0.0.1|8080");
    Built six = build(v, "2001:db8::7", 1, "::1", 443);
    EXPECT_EQ(text_of(six.parsed.source), "2001:db8::7|1");
    EXPECT_EQ(text_of(six.parsed.destination), "::1|443");
    // A dual-stack listener sees IPv4 clients as mapped addresses: they go out as IPv4.
    Built mapped = build(v, "::ffff:192.0.2.9", 5, "::ffff:192.0.2.1", 80);
    EXPECT_EQ(text_of(mapped.parsed.source), "192.0.2.9|5");
    // Mixed families: both as IPv6.
    Built mixed = build(v, "192.0.2.9", 5, "::1", 80);
    EXPECT_EQ(text_of(mixed.parsed.source), "::ffff:192.0.2.9|5");
    EXPECT_EQ(text_of(mixed.parsed.destination), "::1|80");
  }
  EXPECT_EQ(build(ProxyVersion::kV1, "127.0.0.2", 40000, "127.0.0.1", 8080).header,
            "PROXY TCP4 127.0.0.2 127.0.0.1 40000 8080\r\n");
  EXPECT_EQ(build(ProxyVersion::kV2, "192.0.2.1", 56324, "198.51.100.2", 443).header, v2(0x21, 0x11, kV4Block));
}

TEST(ProxyProtocol, LocalHeaders) {
  std::string one, two;
  append_proxy_local_header(ProxyVersion::kV1, &one);
  append_proxy_local_header(ProxyVersion::kV2, &two);
  EXPECT_EQ(one, "PROXY UNKNOWN\r\n");
  EXPECT_EQ(two, v2(0x20, 0x00, ""));
  std::string none;
  append_proxy_header(ProxyVersion::kV2, nullptr, nullptr, &none);
  EXPECT_EQ(none, two);
  for (const std::string& s : {one, two}) {
    ProxyHeader h;
    ProxyParse r = parse_proxy_header(s, &h);
    EXPECT_EQ(r.status, Status::kDone);
    EXPECT_FALSE(h.has_addresses);
  }
}

}  // namespace
}  // namespace limpet::net
