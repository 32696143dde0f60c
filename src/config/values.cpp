#include "limpet/config/values.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <limits>

namespace limpet::config {

namespace {

constexpr uint64_t kMaxDurationMs = 3650ULL * 24 * 3600 * 1000;  // ten years: only a typo is longer

bool is_digit(char c) { return c >= '0' && c <= '9'; }

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_digit);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// Digits only, no sign, no overflow past `max`.
bool parse_uint(std::string_view s, uint64_t max, uint64_t& out) {
  if (!all_digits(s)) return false;
  uint64_t v = 0;
  for (char c : s) {
    if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, uint64_t(c - '0'), &v)) return false;
    if (v > max) return false;
  }
  out = v;
  return true;
}

struct Unit {
  std::string_view suffix;
  uint64_t factor;
};

// Longest suffix first so "ms" is not read as "m" + "s".
constexpr std::array<Unit, 5> kDurationUnits{{
    {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 24 * 3600 * 1000}}};

constexpr std::array<Unit, 7> kSizeUnits{{{"kb", 1ULL << 10},
                                          {"mb", 1ULL << 20},
                                          {"gb", 1ULL << 30},
                                          {"k", 1ULL << 10},
                                          {"m", 1ULL << 20},
                                          {"g", 1ULL << 30},
                                          {"b", 1}}};

Error duration_error(std::string_view text, std::string_view why) {
  return Error{std::string(why) + ": expected a number and a unit (ms, s, m, h, d) such as \"30s\", " +
               "\"250ms\" or \"1.5s\", got " + quote_value(text)};
}

struct IpBytes {
  int family = 0;  // AF_INET or AF_INET6, 0 = not an IP literal
  std::array<unsigned char, 16> bytes{};
};

IpBytes parse_ip(const std::string& host) {
  IpBytes ip;
  if (inet_pton(AF_INET, host.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET;
  } else if (inet_pton(AF_INET6, host.c_str(), ip.bytes.data()) == 1) {
    ip.family = AF_INET6;
  }
  return ip;
}

std::string ip_text(const IpBytes& ip) {
  std::array<char, INET6_ADDRSTRLEN> buf{};
  inet_ntop(ip.family, ip.bytes.data(), buf.data(), buf.size());
  return buf.data();
}

// RFC 1123 labels: letters, digits and '-', not at a label's ends; 253 characters at most.
bool is_host_name(std::string_view name) {
  if (name.empty() || name.size() > 253) return false;
  for (size_t start = 0; start <= name.size();) {
    const size_t dot = std::min(name.find('.', start), name.size());
    const std::string_view label = name.substr(start, dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
    }
    start = dot + 1;
  }
  const size_t last = name.rfind('.');
  return !all_digits(name.substr(last == std::string_view::npos ? 0 : last + 1));  // "10.0.0.300" is a typo
}

}  // namespace

std::string quote_value(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xf];
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

Result<Millis> parse_duration(std::string_view text) {
  if (text.empty()) return duration_error(text, "empty duration");
  if (text.front() == '-') return duration_error(text, "a duration cannot be negative");
  const auto* unit = std::find_if(kDurationUnits.begin(), kDurationUnits.end(),
                                  [&](const Unit& u) { return text.ends_with(u.suffix); });
  if (unit == kDurationUnits.end()) {
    return duration_error(text, all_digits(text) ? "missing unit" : "not a duration");
  }
  const std::string_view number = text.substr(0, text.size() - unit->suffix.size());
  const size_t dot = number.find('.');
  const std::string_view whole = number.substr(0, dot);
  const std::string_view frac = dot == std::string_view::npos ? std::string_view{} : number.substr(dot + 1);
  if (!all_digits(whole) || (dot != std::string_view::npos && !all_digits(frac))) {
    return duration_error(text, "not a duration");
  }
  if (frac.size() > 9) return duration_error(text, "too many decimals");
  // Exact decimal arithmetic: (whole.frac × unit) must be a whole number of milliseconds.
  uint64_t scale = 1;
  uint64_t mantissa = 0;
  bool ok = parse_uint(whole, kMaxDurationMs, mantissa);
  for (char c : frac) {
    scale *= 10;
    ok = ok && !__builtin_mul_overflow(mantissa, 10, &mantissa) &&
         !__builtin_add_overflow(mantissa, uint64_t(c - '0'), &mantissa);
  }
  uint64_t scaled = 0;
  if (!ok || __builtin_mul_overflow(mantissa, unit->factor, &scaled) || scaled / scale > kMaxDurationMs) {
    return duration_error(text, "duration too long (at most 3650d)");
  }
  if (scaled % scale != 0) return duration_error(text, "not a whole number of milliseconds");
  return Millis(static_cast<Millis::rep>(scaled / scale));
}

Result<size_t> parse_size(std::string_view text) {
  const std::string s = lower(text);
  const auto* unit = std::find_if(kSizeUnits.begin(), kSizeUnits.end(),
                                  [&](const Unit& u) { return std::string_view(s).ends_with(u.suffix); });
  const uint64_t factor = unit == kSizeUnits.end() ? 1 : unit->factor;
  const std::string_view number =
      std::string_view(s).substr(0, s.size() - (unit == kSizeUnits.end() ? 0 : unit->suffix.size()));
  uint64_t n = 0;
  uint64_t bytes = 0;
  if (!parse_uint(number, std::numeric_limits<uint32_t>::max(), n) || __builtin_mul_overflow(n, factor, &bytes) ||
      bytes > std::numeric_limits<size_t>::max()) {
    return Error{"expected a size in bytes: a whole number with an optional unit (k, kb, m, mb, g, gb) such as "
                 "\"16k\" or \"1mb\", got " +
                 quote_value(text)};
  }
  return static_cast<size_t>(bytes);
}

Address numeric_address(const std::string& ip, uint16_t port) {
  Address a;
  a.host = ip;
  a.port = port;
  const std::string p = std::to_string(port);
  a.text = ip.find(':') != std::string::npos ? "[" + ip + "]:" + p : ip + ":" + p;
  return a;
}

Result<std::vector<Address>> parse_resolver(std::string_view text) {
  std::vector<Address> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    std::string item(text.substr(start, comma - start));
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    start = comma + 1;
    if (item.empty()) return Error{"expected DNS servers such as \"127.0.0.1:53\" or \"10.0.0.2, [fd00::2]:53\", got " + quote_value(text)};
    const IpBytes bare = parse_ip(item);
    if (bare.family == AF_INET) item += ":53";
    if (bare.family == AF_INET6) item = "[" + item + "]:53";
    if (item.starts_with('[') && item.ends_with(']')) item += ":53";
    auto a = parse_address(item, AddressUse::kConnect);
    if (!a) return Error{a.message()};
    out.push_back(*a);
  }
  return out;
}

Result<Address> parse_address(std::string_view text, AddressUse use) {
  const std::string expected = use == AddressUse::kListen
                                   ? "expected \"host:port\", \"[ipv6]:port\" or \"*:port\" such as \"127.0.0.1:8080\""
                                   : "expected \"host:port\" or \"[ipv6]:port\" such as \"127.0.0.1:3001\"";
  auto fail = [&](const std::string& why) { return Error{why + ": " + expected + ", got " + quote_value(text)}; };
  // "http://node:3000/" is the commonest slip (nginx's proxy_pass takes a URL): say what to drop.
  if (const size_t scheme = text.find("://"); scheme != std::string_view::npos) {
    const std::string_view rest = text.substr(scheme + 3);
    return Error{"write HOST:PORT, without a scheme, such as " + quote_value(rest.substr(0, rest.find('/'))) +
                 ", got " + quote_value(text)};
  }

  std::string host;
  std::string_view port_text;
  bool bracketed = false;
  if (text.starts_with('[')) {
    const size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return fail("bad bracketed address");
    }
    host = std::string(text.substr(1, close - 1));
    port_text = text.substr(close + 2);
    bracketed = true;
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return fail("missing port");
    host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
    if (host.find(':') != std::string::npos) return fail("an IPv6 address needs brackets");
  }
  uint64_t port = 0;
  if (!parse_uint(port_text, 65535, port) || port == 0) return fail("port must be a number from 1 to 65535");
  if (host.empty()) return fail("missing host");

  Address address;
  address.port = static_cast<uint16_t>(port);
  address.text = std::string(text);
  if (host == "*" && !bracketed) {
    if (use != AddressUse::kListen) return fail("\"*\" (any address) is only for listeners");
    address.host = "0.0.0.0";
    return address;
  }
  if (host == "localhost" && !bracketed) {
    address.host = "127.0.0.1";
    return address;
  }
  const IpBytes ip = parse_ip(host);
  if (ip.family == 0 && !bracketed && use == AddressUse::kBackend) {
    if (!is_host_name(host)) {
      return Error{"host " + quote_value(host) + " in " + quote_value(text) +
                   " is neither a numeric IPv4/IPv6 address nor a host name such as \"node.internal\""};
    }
    address.host = lower(host);
    address.by_name = true;
    return address;
  }
  if (ip.family == 0 || (bracketed && ip.family != AF_INET6)) {
    return Error{"host " + quote_value(host) + " in " + quote_value(text) +
                 " is not a numeric IPv4/IPv6 address or \"localhost\" (host names are not resolved)"};
  }
  if (!bracketed && ip.family == AF_INET6) return fail("an IPv6 address needs brackets");
  address.host = ip_text(ip);
  return address;
}

Result<std::string> parse_cidr(std::string_view text) {
  auto fail = [&]() {
    return Error{"expected an address or CIDR such as \"10.0.0.0/8\", \"127.0.0.1\" or \"::1/128\", got " +
                 quote_value(text)};
  };
  const size_t slash = text.find('/');
  const IpBytes ip = parse_ip(std::string(text.substr(0, slash)));
  if (ip.family == 0) return fail();
  const uint64_t max_prefix = ip.family == AF_INET ? 32 : 128;
  uint64_t prefix = max_prefix;
  if (slash != std::string_view::npos && !parse_uint(text.substr(slash + 1), max_prefix, prefix)) return fail();
  return ip_text(ip) + "/" + std::to_string(prefix);
}

Result<HashKeySource> parse_hash_key(std::string_view text) {
  auto fail = [&](const std::string& why) {
    return Error{why + ": expected \"query:NAME\", \"header:NAME\", \"cookie:NAME\" or \"ip\", got " + quote_value(text)};
  };
  HashKeySource key;
  key.text = std::string(text);
  if (text == "ip") {
    key.kind = HashKeySource::Kind::kIp;
    return key;
  }
  const size_t colon = text.find(':');
  const std::string_view kind = text.substr(0, colon);
  if (colon == std::string_view::npos) {
    return fail(kind == "query" || kind == "header" || kind == "cookie" ? "missing name" : "unknown key kind");
  }
  const std::string_view name = text.substr(colon + 1);
  if (kind == "query") {
    key.kind = HashKeySource::Kind::kQuery;
  } else if (kind == "header") {
    key.kind = HashKeySource::Kind::kHeader;
  } else if (kind == "cookie") {
    key.kind = HashKeySource::Kind::kCookie;
  } else if (kind == "ip") {
    return fail("\"ip\" takes no name");
  } else {
    return fail("unknown key kind " + quote_value(kind));
  }
  const bool printable = std::all_of(name.begin(), name.end(), [](char c) {
    return std::isgraph(static_cast<unsigned char>(c)) != 0;
  });
  if (name.empty() || !printable) return fail("missing or malformed name");
  key.name = std::string(name);
  return key;
}

Result<std::pair<int, int>> parse_status_range(std::string_view text) {
  const size_t dash = text.find('-');
  uint64_t first = 0;
  uint64_t last = 0;
  const bool ok = parse_uint(text.substr(0, dash), 599, first) &&
                  (dash == std::string_view::npos ? (last = first, true)
                                                  : parse_uint(text.substr(dash + 1), 599, last));
  if (!ok || first < 100 || last < first) {
    return Error{"expected an HTTP status or range of statuses (100..599) such as \"200\" or \"200-399\", got " +
                 quote_value(text)};
  }
  return std::pair<int, int>(static_cast<int>(first), static_cast<int>(last));
}

Result<std::string> expand_env(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size();) {
    if (text.substr(i).starts_with("$${")) {
      out += "${";
      i += 3;
      continue;
    }
    if (!text.substr(i).starts_with("${")) {
      out += text[i++];
      continue;
    }
    const size_t close = text.find('}', i + 2);
    const std::string_view name = text.substr(i + 2, close == std::string_view::npos ? 0 : close - i - 2);
    const bool valid = !name.empty() && std::isdigit(static_cast<unsigned char>(name.front())) == 0 &&
                       std::all_of(name.begin(), name.end(),
                                   [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_'; });
    if (close == std::string_view::npos || !valid) {
      return Error{"expected ${NAME} (letters, digits, _) or $${ for a literal \"${\", got " + quote_value(text)};
    }
    const char* value = std::getenv(std::string(name).c_str());
    if (value == nullptr) return Error{"${" + std::string(name) + "}: the environment variable is not set"};
    out += value;
    i = close + 1;
  }
  return out;
}

std::string escape_env(std::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.substr(i).starts_with("${")) out += '$';
    out += text[i];
  }
  return out;
}

bool is_prime(uint64_t n) {
  if (n < 2) return false;
  for (uint64_t d = 2; d * d <= n; ++d) {
    if (n % d == 0) return false;
  }
  return true;
}

uint64_t next_prime(uint64_t n) {
  while (!is_prime(n)) ++n;
  return n;
}

}  // namespace limpet::config
