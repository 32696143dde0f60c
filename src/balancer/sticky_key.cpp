#include "limpet/balancer/sticky_key.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "limpet/util/strings.hpp"

namespace limpet::balancer {
namespace {

// Compares a raw (still encoded) query name with the wanted one without allocating in the
// common case of a name with nothing to decode.
bool name_matches(std::string_view raw, std::string_view name) {
  if (raw.find_first_of("%+") == std::string_view::npos) return raw == name;
  return percent_decode(raw, true) == name;
}

bool prefix_bits_equal(const uint8_t* a, const uint8_t* b, int bits) {
  const int whole = bits / 8;
  if (std::memcmp(a, b, static_cast<size_t>(whole)) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

constexpr uint8_t kV4Mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

std::optional<IpAddress> parse_plain_ip(std::string_view text) {
  char buf[INET6_ADDRSTRLEN + 1];
  if (text.empty() || text.size() >= sizeof buf) return std::nullopt;
  // inet_pton reads up to the first NUL: "10.0.0.1\0junk" must not pass for 10.0.0.1.
  if (text.find('\0') != std::string_view::npos) return std::nullopt;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  IpAddress ip;
  if (inet_pton(AF_INET, buf, ip.bytes) == 1) {
    ip.family = AF_INET;
    return ip;
  }
  if (inet_pton(AF_INET6, buf, ip.bytes) == 1) {
    ip.family = AF_INET6;
    if (std::memcmp(ip.bytes, kV4Mapped, sizeof kV4Mapped) == 0) {
      std::memmove(ip.bytes, ip.bytes + 12, 4);
      std::memset(ip.bytes + 4, 0, 12);
      ip.family = AF_INET;
    }
    return ip;
  }
  return std::nullopt;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// The first pair named `name` in one Cookie header value, blanks and one pair of quotes removed;
// an empty view when present without a value.
std::optional<std::string_view> find_cookie(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const size_t semi = header.find(';');
    const std::string_view pair = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view() : header.substr(semi + 1);
    const size_t eq = pair.find('=');
    if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != name) continue;
    std::string_view value = trim(pair.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    return value;
  }
  return std::nullopt;
}

}  // namespace

std::string percent_decode(std::string_view s, bool plus_is_space) {
  std::string out;
  percent_decode_into(s, plus_is_space, out);
  return out;
}

void percent_decode_into(std::string_view s, bool plus_is_space, std::string& out) {
  out.clear();
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(plus_is_space && c == '+' ? ' ' : c);
  }
}

std::optional<std::string> query_param(std::string_view query, std::string_view name) {
  std::string value;
  if (!query_param_into(query, name, value)) return std::nullopt;
  return value;
}

bool query_param_into(std::string_view query, std::string_view name, std::string& value) {
  value.clear();
  while (!query.empty()) {
    const size_t amp = query.find('&');
    const std::string_view piece = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (piece.empty()) continue;
    const size_t eq = piece.find('=');
    if (!name_matches(piece.substr(0, eq), name)) continue;
    if (eq == std::string_view::npos) return false;  // "sid" alone: present but empty
    percent_decode_into(piece.substr(eq + 1), true, value);
    return !value.empty();
  }
  return false;
}

bool is_engineio_path(std::string_view path, const std::vector<std::string>& engineio_paths) {
  for (const auto& p : engineio_paths) {
    if (p.empty()) continue;
    if (path.substr(0, p.size()) == p) {
      // "/socket.io/" covers "/socket.io/anything"; a configured path without a trailing slash
      // must not match a longer name ("/socket.io" is not "/socket.iox").
      if (p.back() == '/' || path.size() == p.size() || path[p.size()] == '/') return true;
    } else if (p.back() == '/' && path == std::string_view(p).substr(0, p.size() - 1)) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> engineio_sid(const http::RequestHead& head,
                                        const std::vector<std::string>& engineio_paths) {
  if (head.query.empty() || !is_engineio_path(head.path, engineio_paths)) return std::nullopt;
  return query_param(head.query, "sid");
}

std::optional<std::string> header_value(const http::HeadBase& head, std::string_view name) {
  auto v = head.header(name);
  if (!v) return std::nullopt;
  const std::string_view t = trim(*v);
  if (t.empty()) return std::nullopt;
  return std::string(t);
}

std::optional<std::string> cookie_in(std::string_view cookie_header, std::string_view name) {
  auto v = find_cookie(cookie_header, name);
  if (!v || v->empty()) return std::nullopt;
  return std::string(*v);
}

std::optional<std::string> cookie_value(const http::HeadBase& head, std::string_view name) {
  for (const auto& h : head.headers) {
    if (!http::iequals(h.name, "cookie")) continue;
    auto v = find_cookie(h.value, name);
    if (!v) continue;
    if (v->empty()) return std::nullopt;  // the first occurrence decides, even when empty
    return std::string(*v);
  }
  return std::nullopt;
}

std::optional<IpAddress> parse_ip(std::string_view text) {
  text = trim(text);
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty() && !(rest.front() == ':' && all_digits(rest.substr(1)))) return std::nullopt;
    auto ip = parse_plain_ip(text.substr(1, close - 1));
    if (!ip) return std::nullopt;
    return ip;
  }
  const size_t colon = text.find(':');
  if (colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos) {
    // Exactly one colon: "a.b.c.d:port" (an IPv6 address has at least two).
    if (!all_digits(text.substr(colon + 1))) return std::nullopt;
    auto ip = parse_plain_ip(text.substr(0, colon));
    if (!ip || ip->family != AF_INET) return std::nullopt;
    return ip;
  }
  return parse_plain_ip(text);
}

std::optional<IpAddress> ip_of(const sockaddr* addr) {
  IpAddress ip;
  if (addr->sa_family == AF_INET) {
    std::memcpy(ip.bytes, &reinterpret_cast<const sockaddr_in*>(addr)->sin_addr, 4);
    ip.family = AF_INET;
    return ip;
  }
  if (addr->sa_family != AF_INET6) return std::nullopt;
  const uint8_t* v6 = reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr.s6_addr;
  if (std::memcmp(v6, kV4Mapped, sizeof kV4Mapped) == 0) {
    std::memcpy(ip.bytes, v6 + 12, 4);
    ip.family = AF_INET;
  } else {
    std::memcpy(ip.bytes, v6, 16);
    ip.family = AF_INET6;
  }
  return ip;
}

std::string to_string(const IpAddress& ip) {
  char buf[INET6_ADDRSTRLEN];
  if (ip.family == 0 || inet_ntop(ip.family, ip.bytes, buf, sizeof buf) == nullptr) return {};
  return buf;
}

Result<CidrSet> CidrSet::parse(const std::vector<std::string>& cidrs) {
  CidrSet set;
  for (const auto& text : cidrs) {
    const size_t slash = text.find('/');
    std::string_view addr = std::string_view(text).substr(0, slash);
    auto ip = parse_plain_ip(trim(addr));
    if (!ip) return Result<CidrSet>::fail("trusted_proxies: " + text + " is not an address or CIDR");
    const bool mapped = ip->family == AF_INET && trim(addr).find(':') != std::string_view::npos;
    const int max_prefix = ip->family == AF_INET ? 32 : 128;
    int prefix = max_prefix;
    if (slash != std::string::npos) {
      const std::string_view digits = trim(std::string_view(text).substr(slash + 1));
      if (!all_digits(digits) || digits.size() > 3) {
        return Result<CidrSet>::fail("trusted_proxies: bad prefix length in " + text);
      }
      prefix = std::stoi(std::string(digits));
      // "::ffff:10.0.0.0/104" is the IPv4 block 10.0.0.0/8 once mapped addresses are IPv4.
      if (mapped) prefix -= 96;
      if (prefix < 0 || prefix > max_prefix) {
        return Result<CidrSet>::fail("trusted_proxies: bad prefix length in " + text);
      }
    }
    set.blocks_.push_back({*ip, prefix});
  }
  return set;
}

bool CidrSet::contains(const IpAddress& ip) const {
  for (const auto& b : blocks_) {
    if (b.base.family == ip.family && prefix_bits_equal(b.base.bytes, ip.bytes, b.prefix)) return true;
  }
  return false;
}

std::string client_address(const http::RequestHead& head, std::string_view peer, const CidrSet& trusted) {
  auto peer_ip = parse_ip(peer);
  if (!peer_ip) return std::string(peer);
  if (trusted.empty() || !trusted.contains(*peer_ip)) return to_string(*peer_ip);

  // Hops of every X-Forwarded-For header, in order: a later header continues the list.
  std::vector<std::string_view> hops;
  for (const auto& h : head.headers) {
    if (!http::iequals(h.name, "x-forwarded-for")) continue;
    std::string_view v = h.value;
    while (true) {
      const size_t comma = v.find(',');
      hops.push_back(trim(v.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  IpAddress client = *peer_ip;
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    if (it->empty()) continue;  // "a, , b": an empty element is a formatting slip, not a hop
    auto hop = parse_ip(*it);
    if (!hop) break;  // garbage ("unknown", a name): keep the last address we could believe
    client = *hop;
    if (!trusted.contains(*hop)) break;
  }
  return to_string(client);
}

std::optional<std::string> extract_key(const config::HashKeySource& source, const http::RequestHead& head,
                                       std::string_view peer, const CidrSet& trusted) {
  using Kind = config::HashKeySource::Kind;
  switch (source.kind) {
    case Kind::kQuery:
      return query_param(head.query, source.name);
    case Kind::kHeader:
      return header_value(head, source.name);
    case Kind::kCookie:
      return cookie_value(head, source.name);
    case Kind::kIp: {
      std::string ip = client_address(head, peer, trusted);
      if (ip.empty()) return std::nullopt;
      return ip;
    }
  }
  return std::nullopt;
}

std::optional<StickyKey> first_key(const std::vector<config::HashKeySource>& sources,
                                   const http::RequestHead& head, std::string_view peer,
                                   const CidrSet& trusted) {
  for (size_t i = 0; i < sources.size(); ++i) {
    if (auto v = extract_key(sources[i], head, peer, trusted)) return StickyKey{i, std::move(*v)};
  }
  return std::nullopt;
}

}  // namespace limpet::balancer
