// Sticky-key extraction (balancer/sticky_key.hpp): query parameters, cookies, headers, the client
// address behind trusted proxies (X-Forwarded-For), percent-decoding, Engine.IO paths.
// Input: "PEER\nCIDR,CIDR,...\nREQUEST" — the peer address, upstream.trusted_proxies, and a
// request head parsed by limpet's parser (a head that does not parse still feeds the string
// functions). Each function is compared with a reference written here from its documented
// contract (the header comments), not from its code:
//  - percent_decode / percent_decode_into (a reused buffer gives the same), and decoding what
//    was fully encoded gives the original bytes back;
//  - query_param: first occurrence decides, empty is absent, names decoded and compared exactly;
//  - cookie_in / cookie_value: blanks trimmed, one pair of quotes removed, first occurrence
//    decides (over every Cookie header), empty is absent;
//  - parse_ip / to_string round trip, IPv4-mapped stored as IPv4; CidrSet::contains bit by bit;
//  - client_address: the X-Forwarded-For walk from the right over trusted hops;
//  - extract_key / first_key / engineio_sid agree with the above.
#include <arpa/inet.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_http.hpp"
#include "limpet/balancer/sticky_key.hpp"

namespace limpet::fuzz {
namespace {

namespace bal = balancer;

int hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string ref_decode(std::string_view s, bool plus) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 3;
    } else {
      out += plus && s[i] == '+' ? ' ' : s[i];
      i += 1;
    }
  }
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t at = s.find(sep, start);
    parts.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) return parts;
    start = at + 1;
  }
}

std::string_view blank_trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::optional<std::string> ref_query(std::string_view query, std::string_view name) {
  if (query.empty()) return std::nullopt;
  for (std::string_view piece : split(query, '&')) {
    if (piece.empty()) continue;
    const size_t eq = piece.find('=');
    if (ref_decode(piece.substr(0, eq), true) != name) continue;
    if (eq == std::string_view::npos) return std::nullopt;
    std::string v = ref_decode(piece.substr(eq + 1), true);
    if (v.empty()) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

// nullopt: not in this header; "" present but empty.
std::optional<std::string> ref_cookie_in(std::string_view header, std::string_view name) {
  for (std::string_view pair : split(header, ';')) {
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos) continue;
    if (blank_trim(pair.substr(0, eq)) != name) continue;
    std::string_view v = blank_trim(pair.substr(eq + 1));
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return std::string(v);
  }
  return std::nullopt;
}

std::optional<std::string> ref_cookie_value(const http::RequestHead& head, std::string_view name) {
  for (const auto& h : head.headers) {
    if (!http::iequals(h.name, "cookie")) continue;
    auto v = ref_cookie_in(h.value, name);
    if (!v) continue;
    if (v->empty()) return std::nullopt;
    return v;
  }
  return std::nullopt;
}

struct RefBlock {
  int family;
  uint8_t bytes[16];
  int prefix;
};

// upstream.trusted_proxies as documented: "ADDR" or "ADDR/LEN", IPv4-mapped IPv6 blocks as IPv4.
std::optional<std::vector<RefBlock>> ref_cidrs(const std::vector<std::string>& texts) {
  std::vector<RefBlock> blocks;
  for (const auto& text : texts) {
    const size_t slash = text.find('/');
    const std::string addr(blank_trim(std::string_view(text).substr(0, slash)));
    RefBlock b{};
    if (addr.find('\0') != std::string::npos) return std::nullopt;
    if (inet_pton(AF_INET, addr.c_str(), b.bytes) == 1) {
      b.family = AF_INET;
      b.prefix = 32;
    } else if (inet_pton(AF_INET6, addr.c_str(), b.bytes) == 1) {
      b.family = AF_INET6;
      b.prefix = 128;
      static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
      if (std::memcmp(b.bytes, kMapped, 12) == 0) {
        std::memmove(b.bytes, b.bytes + 12, 4);
        std::memset(b.bytes + 4, 0, 12);
        b.family = AF_INET;
        b.prefix = 32;
        if (slash == std::string::npos) {
          blocks.push_back(b);
          continue;
        }
        b.prefix = -96;  // the written length counts the 96 mapping bits
      }
    } else {
      return std::nullopt;
    }
    if (slash != std::string::npos) {
      const std::string_view digits = blank_trim(std::string_view(text).substr(slash + 1));
      if (digits.empty() || digits.size() > 3) return std::nullopt;
      int n = 0;
      for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + (c - '0');
      }
      const int max = b.family == AF_INET ? 32 : 128;
      n += b.prefix == -96 ? -96 : 0;
      if (n < 0 || n > max) return std::nullopt;
      b.prefix = n;
    }
    blocks.push_back(b);
  }
  return blocks;
}

bool ref_contains(const std::vector<RefBlock>& blocks, const bal::IpAddress& ip) {
  for (const auto& b : blocks) {
    if (b.family != ip.family) continue;
    bool all = true;
    for (int bit = 0; bit < b.prefix && all; ++bit) {
      const int mask = 0x80 >> (bit % 8);
      all = (b.bytes[bit / 8] & mask) == (ip.bytes[bit / 8] & mask);
    }
    if (all) return true;
  }
  return false;
}

void check_ip(std::string_view text) {
  const auto ip = bal::parse_ip(text);
  if (!ip) return;
  const std::string where = "parse_ip(\"" + escape(text) + "\")";
  FUZZ_CHECK(ip->family == AF_INET || ip->family == AF_INET6, where + ": bad family");
  if (ip->family == AF_INET6) {
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    FUZZ_CHECK(std::memcmp(ip->bytes, kMapped, 12) != 0, where + ": IPv4-mapped kept as IPv6");
  } else {
    for (int i = 4; i < 16; ++i) FUZZ_CHECK(ip->bytes[i] == 0, where + ": IPv4 with bytes past 4");
  }
  const std::string s = bal::to_string(*ip);
  FUZZ_CHECK(!s.empty(), where + ": to_string empty");
  const auto again = bal::parse_ip(s);
  FUZZ_CHECK(again && again->family == ip->family && std::memcmp(again->bytes, ip->bytes, 16) == 0,
             where + ": to_string \"" + s + "\" does not parse back to the same address");
  FUZZ_CHECK(bal::to_string(*again) == s, where + ": to_string not stable");
}

std::string ref_client(const http::RequestHead& head, std::string_view peer, const std::vector<RefBlock>& trusted) {
  const auto peer_ip = bal::parse_ip(peer);
  if (!peer_ip) return std::string(peer);
  if (trusted.empty() || !ref_contains(trusted, *peer_ip)) return bal::to_string(*peer_ip);
  std::vector<std::string_view> hops;
  for (const auto& h : head.headers) {
    if (!http::iequals(h.name, "x-forwarded-for")) continue;
    for (std::string_view hop : split(h.value, ',')) hops.push_back(blank_trim(hop));
  }
  bal::IpAddress client = *peer_ip;
  for (size_t i = hops.size(); i-- > 0;) {
    if (hops[i].empty()) continue;
    const auto ip = bal::parse_ip(hops[i]);
    if (!ip) break;
    client = *ip;
    if (!ref_contains(trusted, *ip)) break;
  }
  return bal::to_string(client);
}

void check_strings(std::string_view s) {
  for (bool plus : {false, true}) {
    const std::string d = bal::percent_decode(s, plus);
    FUZZ_CHECK(d == ref_decode(s, plus), "percent_decode(\"" + escape(s) + "\", " + std::to_string(plus) + ") = \"" +
                                             escape(d) + "\", expected \"" + escape(ref_decode(s, plus)) + "\"");
    std::string reused = "left over from an earlier call, longer than most inputs";
    bal::percent_decode_into(s, plus, reused);
    FUZZ_CHECK(reused == d, "percent_decode_into differs from percent_decode");
  }
  std::string encoded;
  for (unsigned char c : s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    encoded += '%';
    encoded += kHex[c >> 4];
    encoded += kHex[c & 15];
  }
  FUZZ_CHECK(bal::percent_decode(encoded, true) == s, "decoding a full encoding does not give the bytes back");

  for (std::string_view name : {"sid", "room", "EIO", ""}) {
    const auto v = bal::query_param(s, name);
    const auto r = ref_query(s, name);
    FUZZ_CHECK(v == r, "query_param(\"" + escape(s) + "\", \"" + std::string(name) + "\") = \"" +
                           escape(v.value_or("<none>")) + "\", expected \"" + escape(r.value_or("<none>")) + "\"");
    std::string reused = "x";
    FUZZ_CHECK(bal::query_param_into(s, name, reused) == v.has_value() && (!v || reused == *v),
               "query_param_into differs from query_param");
  }
  for (std::string_view name : {"io", "room", "limpet_backend"}) {
    const auto v = bal::cookie_in(s, name);
    auto r = ref_cookie_in(s, name);
    if (r && r->empty()) r.reset();
    FUZZ_CHECK(v == r, "cookie_in(\"" + escape(s) + "\", \"" + std::string(name) + "\") = \"" +
                           escape(v.value_or("<none>")) + "\", expected \"" + escape(r.value_or("<none>")) + "\"");
  }
}

bool ref_engineio_path(std::string_view path, const std::vector<std::string>& paths) {
  for (const auto& p : paths) {
    if (p.empty()) continue;
    std::string_view base = p;
    const bool dir = base.back() == '/';
    if (dir) base.remove_suffix(1);
    // "/socket.io/" matches "/socket.io" and "/socket.io/..."; "/x" matches "/x" and "/x/...".
    if (path == base) return true;
    if (path.size() > base.size() && path.substr(0, base.size()) == base && path[base.size()] == '/') return true;
    if (!dir && path == p) return true;
  }
  return false;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet;
  using namespace limpet::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  std::string_view rest = input;
  auto line = [&rest]() {
    const size_t nl = rest.find('\n');
    std::string_view l = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    return l;
  };
  const std::string_view peer = line();
  const std::string_view cidr_line = line();
  check_strings(peer);
  check_strings(cidr_line);
  check_ip(peer);

  std::vector<std::string> cidrs;
  if (!cidr_line.empty()) {
    for (std::string_view c : split(cidr_line, ',')) {
      cidrs.emplace_back(c);
      check_ip(c);
    }
  }
  const auto set = balancer::CidrSet::parse(cidrs);
  const auto ref_set = ref_cidrs(cidrs);
  FUZZ_CHECK(set.is_ok() == ref_set.has_value(),
             "CidrSet::parse(\"" + escape(cidr_line) + "\") " + (set.is_ok() ? "accepted" : "refused: " + set.message()));
  const balancer::CidrSet trusted = set.is_ok() ? *set : balancer::CidrSet();
  const std::vector<RefBlock> ref_trusted = ref_set.value_or(std::vector<RefBlock>());
  if (auto ip = balancer::parse_ip(peer)) {
    FUZZ_CHECK(trusted.contains(*ip) == ref_contains(ref_trusted, *ip), "CidrSet::contains(" + escape(peer) + ")");
  }

  struct Keep : http::ParserDelegate {
    bool on_head() override { return false; }
    bool on_body(std::string_view) override { return true; }
    void on_message_end() override {}
  } keep;
  http::Parser parser(http::Parser::Kind::kRequest, {}, &keep);
  const std::string request(rest);  // never a null view: llhttp does pointer arithmetic on it
  const auto out = parser.execute(request);
  if (out.state == http::Parser::State::kError || parser.in_head()) return 0;
  const auto head = parser.take_request();
  if (!head) return 0;  // no request began

  check_strings(head->query);
  for (const auto& h : head->headers) {
    if (http::iequals(h.name, "cookie")) check_strings(h.value);
    if (http::iequals(h.name, "x-forwarded-for")) {
      for (std::string_view hop : split(h.value, ',')) check_ip(hop);
    }
  }
  const std::string client = balancer::client_address(*head, peer, trusted);
  const std::string expected = ref_client(*head, peer, ref_trusted);
  FUZZ_CHECK(client == expected, "client_address = \"" + escape(client) + "\", expected \"" + escape(expected) +
                                     "\" for peer \"" + escape(peer) + "\", trusted \"" + escape(cidr_line) +
                                     "\", request \"" + escape(request) + "\"");

  using Kind = config::HashKeySource::Kind;
  const std::vector<config::HashKeySource> sources = {
      {Kind::kQuery, "room", "query:room"}, {Kind::kCookie, "room", "cookie:room"},
      {Kind::kHeader, "x-room", "header:x-room"}, {Kind::kIp, "", "ip"}};
  std::optional<balancer::StickyKey> expected_first;
  for (size_t i = 0; i < sources.size(); ++i) {
    const auto k = balancer::extract_key(sources[i], *head, peer, trusted);
    std::optional<std::string> r;
    switch (sources[i].kind) {
      case Kind::kQuery: r = ref_query(head->query, sources[i].name); break;
      case Kind::kCookie: r = ref_cookie_value(*head, sources[i].name); break;
      case Kind::kHeader: {
        if (auto v = head->header(sources[i].name); v && !blank_trim(*v).empty()) r = std::string(blank_trim(*v));
        break;
      }
      case Kind::kIp:
        if (!expected.empty()) r = expected;
        break;
    }
    FUZZ_CHECK(k == r, "extract_key(" + sources[i].text + ") = \"" + escape(k.value_or("<none>")) + "\", expected \"" +
                           escape(r.value_or("<none>")) + "\"");
    if (r && !expected_first) expected_first = balancer::StickyKey{i, *r};
  }
  const auto first = balancer::first_key(sources, *head, peer, trusted);
  FUZZ_CHECK(first.has_value() == expected_first.has_value() &&
                 (!first || (first->source == expected_first->source && first->value == expected_first->value)),
             "first_key disagrees with extract_key");

  const std::vector<std::string> paths = {"/socket.io/", "/engine.io"};
  const bool on_path = balancer::is_engineio_path(head->path, paths);
  FUZZ_CHECK(on_path == ref_engineio_path(head->path, paths), "is_engineio_path(\"" + escape(head->path) + "\")");
  const auto sid = balancer::engineio_sid(*head, paths);
  const auto ref_sid = on_path ? ref_query(head->query, "sid") : std::nullopt;
  FUZZ_CHECK(sid == ref_sid, "engineio_sid = \"" + escape(sid.value_or("<none>")) + "\", expected \"" +
                                 escape(ref_sid.value_or("<none>")) + "\"");
  return 0;
}
