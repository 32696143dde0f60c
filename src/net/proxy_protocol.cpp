#include "limpet/net/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>

namespace limpet::net {
namespace {

using Status = ProxyParse::Status;

constexpr std::string_view kV1Prefix = "PROXY ";
constexpr char kV2SignatureBytes[] = "\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A";
constexpr std::string_view kV2Signature(kV2SignatureBytes, 12);
constexpr size_t kV2FixedLength = 16;  // signature, version/command, family, length

// v2 address families (high nibble) and transports (low nibble), spec §2.2.
constexpr uint8_t kFamilyInet = 1, kFamilyInet6 = 2, kFamilyUnix = 3;
constexpr uint8_t kTransportStream = 1, kTransportMax = 2;
constexpr uint8_t kCommandLocal = 0, kCommandProxy = 1;
// The address block each family's PROXY command carries (sources and destinations, with ports).
constexpr size_t kAddressBlock[] = {0, 12, 36, 216};

ProxyParse need_more() { return {}; }
ProxyParse error(const char* why) { return {Status::kError, 0, why}; }
ProxyParse done(size_t consumed) { return {Status::kDone, consumed, nullptr}; }

// `data` so far agrees with `prefix` (as much of it as has arrived).
bool starts_like(std::string_view data, std::string_view prefix) {
  const size_t n = std::min(data.size(), prefix.size());
  return data.substr(0, n) == prefix.substr(0, n);
}

void set_v4(SocketAddress* out, const void* addr4, uint16_t port_network_order) {
  *out = SocketAddress{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&out->storage);
  sin->sin_family = AF_INET;
  std::memcpy(&sin->sin_addr, addr4, 4);
  sin->sin_port = port_network_order;
  out->length = sizeof(sockaddr_in);
}

void set_v6(SocketAddress* out, const void* addr16, uint16_t port_network_order) {
  *out = SocketAddress{};
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out->storage);
  sin6->sin6_family = AF_INET6;
  std::memcpy(&sin6->sin6_addr, addr16, 16);
  sin6->sin6_port = port_network_order;
  out->length = sizeof(sockaddr_in6);
}

// ---------------------------------------------------------------------------------------------
// v1: "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"

// A decimal port, 0..65535, no sign, no leading zero (but "0").
bool parse_port(std::string_view s, uint16_t* port) {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  if (v > 65535) return false;
  *port = static_cast<uint16_t>(v);
  return true;
}

// inet_pton wants a NUL-terminated string; an address longer than any IPv6 text is no address.
bool parse_address(std::string_view s, int family, unsigned char* bytes) {
  char text[INET6_ADDRSTRLEN];
  if (s.empty() || s.size() >= sizeof text) return false;
  std::memcpy(text, s.data(), s.size());
  text[s.size()] = '\0';
  return inet_pton(family, text, bytes) == 1;
}

// The next token up to a single space (or the end); false on an empty token (two spaces).
bool next_token(std::string_view* rest, std::string_view* token) {
  const size_t sp = rest->find(' ');
  *token = rest->substr(0, sp);
  *rest = sp == std::string_view::npos ? std::string_view() : rest->substr(sp + 1);
  return !token->empty();
}

// `line` is what lies between "PROXY " and CRLF.
ProxyParse parse_v1_line(std::string_view line, size_t consumed, ProxyHeader* out) {
  std::string_view rest = line;
  std::string_view protocol;
  if (!next_token(&rest, &protocol)) return error("v1: bad protocol");
  if (protocol == "UNKNOWN") {
    // The sender may append anything after UNKNOWN; the receiver ignores it (spec §2.1).
    *out = ProxyHeader{};
    out->version = 1;
    return done(consumed);
  }
  int family;
  if (protocol == "TCP4") {
    family = AF_INET;
  } else if (protocol == "TCP6") {
    family = AF_INET6;
  } else {
    return error("v1: bad protocol");
  }
  const bool ends_with_space = !line.empty() && line.back() == ' ';
  std::string_view src, dst, sport, dport;
  if (!next_token(&rest, &src) || !next_token(&rest, &dst) || !next_token(&rest, &sport) ||
      !next_token(&rest, &dport) || !rest.empty() || ends_with_space) {
    return error("v1: expected four fields after the protocol, single spaces");
  }
  unsigned char src_bytes[16], dst_bytes[16];
  if (!parse_address(src, family, src_bytes)) return error("v1: bad source address");
  if (!parse_address(dst, family, dst_bytes)) return error("v1: bad destination address");
  uint16_t src_port, dst_port;
  if (!parse_port(sport, &src_port)) return error("v1: bad source port");
  if (!parse_port(dport, &dst_port)) return error("v1: bad destination port");
  *out = ProxyHeader{};
  out->version = 1;
  out->has_addresses = true;
  if (family == AF_INET) {
    set_v4(&out->source, src_bytes, htons(src_port));
    set_v4(&out->destination, dst_bytes, htons(dst_port));
  } else {
    set_v6(&out->source, src_bytes, htons(src_port));
    set_v6(&out->destination, dst_bytes, htons(dst_port));
  }
  return done(consumed);
}

ProxyParse parse_v1(std::string_view data, ProxyHeader* out) {
  // Printable US-ASCII up to CR LF, the LF at most the kProxyV1MaxLength-th byte.
  constexpr size_t kLastCr = kProxyV1MaxLength - 2;
  const size_t end = std::min(data.size(), kLastCr + 1);
  for (size_t i = kV1Prefix.size(); i < end; ++i) {
    const auto c = static_cast<unsigned char>(data[i]);
    if (c == '\r') {
      if (i + 1 == data.size()) return need_more();
      if (data[i + 1] != '\n') return error("v1: CR without LF");
      return parse_v1_line(data.substr(kV1Prefix.size(), i - kV1Prefix.size()), i + 2, out);
    }
    if (c < 0x20 || c > 0x7e) return error("v1: bad character");
  }
  return data.size() > kLastCr ? error("v1: header too long") : need_more();
}

// ---------------------------------------------------------------------------------------------
// v2: 16 fixed bytes, then `length` bytes of addresses and TLVs

ProxyParse parse_v2(std::string_view data, ProxyHeader* out) {
  const auto* p = reinterpret_cast<const unsigned char*>(data.data());
  // Each fixed byte is judged as soon as it arrives (the caller saw at least 13).
  if ((p[12] >> 4) != 2) return error("v2: unsupported version");
  const uint8_t command = p[12] & 0x0f;
  if (command != kCommandLocal && command != kCommandProxy) return error("v2: unknown command");
  const uint8_t family = data.size() > 13 ? (p[13] >> 4) : 0;
  const uint8_t transport = data.size() > 13 ? (p[13] & 0x0f) : 0;
  if (family > kFamilyUnix || transport > kTransportMax) return error("v2: unknown address family");
  if (data.size() < kV2FixedLength) return need_more();
  const size_t length = (size_t{p[14]} << 8) | p[15];
  const size_t total = kV2FixedLength + length;
  if (total > kProxyV2MaxLength) return error("v2: header too long");
  // LOCAL: the block is discarded, family included (spec §2.2), so only its length matters.
  if (command == kCommandProxy && length < kAddressBlock[family]) {
    return error("v2: length does not cover the address block");
  }
  if (data.size() < total) return need_more();

  *out = ProxyHeader{};
  out->version = 2;
  if (command == kCommandLocal) return done(total);
  // TLVs follow the addresses: skipped, but each must lie within the header.
  for (size_t at = kV2FixedLength + kAddressBlock[family]; at < total;) {
    if (total - at < 3) return error("v2: truncated TLV");
    const size_t tlv_length = (size_t{p[at + 1]} << 8) | p[at + 2];
    if (total - at - 3 < tlv_length) return error("v2: TLV overflows the header");
    at += 3 + tlv_length;
  }
  const unsigned char* a = p + kV2FixedLength;
  uint16_t src_port, dst_port;
  if (transport == kTransportStream && family == kFamilyInet) {
    std::memcpy(&src_port, a + 8, 2);
    std::memcpy(&dst_port, a + 10, 2);
    set_v4(&out->source, a, src_port);
    set_v4(&out->destination, a + 4, dst_port);
    out->has_addresses = true;
  } else if (transport == kTransportStream && family == kFamilyInet6) {
    std::memcpy(&src_port, a + 32, 2);
    std::memcpy(&dst_port, a + 34, 2);
    set_v6(&out->source, a, src_port);
    set_v6(&out->destination, a + 16, dst_port);
    out->has_addresses = true;
  }
  // UNSPEC, UNIX, or not a stream: nothing we could use as a TCP peer; keep the socket's.
  return done(total);
}

// ---------------------------------------------------------------------------------------------
// Building

// Copies `addr` into `out`, IPv4-mapped IPv6 turned into IPv4. False when not IP.
bool normalised(const sockaddr* addr, SocketAddress* out) {
  if (addr == nullptr) return false;
  if (addr->sa_family == AF_INET) {
    const auto* sin = reinterpret_cast<const sockaddr_in*>(addr);
    set_v4(out, &sin->sin_addr, sin->sin_port);
    return true;
  }
  if (addr->sa_family != AF_INET6) return false;
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(addr);
  if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
    set_v4(out, sin6->sin6_addr.s6_addr + 12, sin6->sin6_port);
  } else {
    set_v6(out, &sin6->sin6_addr, sin6->sin6_port);
  }
  return true;
}

void map_to_v6(SocketAddress* addr) {
  if (addr->storage.ss_family != AF_INET) return;
  const auto sin = *reinterpret_cast<const sockaddr_in*>(&addr->storage);
  unsigned char mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  std::memcpy(mapped + 12, &sin.sin_addr, 4);
  set_v6(addr, mapped, sin.sin_port);
}

const unsigned char* ip_bytes(const SocketAddress& a) {
  if (a.storage.ss_family == AF_INET) {
    return reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_addr);
  }
  return reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_addr.s6_addr;
}

uint16_t port_network_order(const SocketAddress& a) {
  if (a.storage.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port;
  return reinterpret_cast<const sockaddr_in6*>(&a.storage)->sin6_port;
}

void append_v2_fixed(uint8_t command, uint8_t family_transport, uint16_t length, std::string* out) {
  out->append(kV2Signature);
  out->push_back(static_cast<char>(0x20 | command));
  out->push_back(static_cast<char>(family_transport));
  out->push_back(static_cast<char>(length >> 8));
  out->push_back(static_cast<char>(length & 0xff));
}

}  // namespace

bool operator==(const ProxyHeader& a, const ProxyHeader& b) {
  auto same = [](const SocketAddress& x, const SocketAddress& y) {
    return x.length == y.length && std::memcmp(&x.storage, &y.storage, sizeof x.storage) == 0;
  };
  return a.version == b.version && a.has_addresses == b.has_addresses && same(a.source, b.source) &&
         same(a.destination, b.destination);
}

ProxyParse parse_proxy_header(std::string_view data, ProxyHeader* out) {
  if (data.empty()) return need_more();
  if (data[0] == 'P') {
    if (!starts_like(data, kV1Prefix)) return error("no PROXY protocol header");
    return data.size() <= kV1Prefix.size() ? need_more() : parse_v1(data, out);
  }
  if (data[0] == '\r') {
    if (!starts_like(data, kV2Signature)) return error("no PROXY protocol header");
    return data.size() <= kV2Signature.size() ? need_more() : parse_v2(data, out);
  }
  return error("no PROXY protocol header");
}

ProxyParse ProxyHeaderReader::feed(std::string_view chunk) {
  if (buffered_.empty()) {
    ProxyParse r = parse_proxy_header(chunk, &header_);
    // Only a prefix shorter than kProxyMaxLength is ever kNeedMore, so this copy is bounded.
    if (r.status == Status::kNeedMore) buffered_.assign(chunk);
    return r;
  }
  const size_t before = buffered_.size();
  // No header is longer than kProxyMaxLength: the rest of a large read is not worth copying.
  buffered_.append(chunk.substr(0, kProxyMaxLength - std::min(before, kProxyMaxLength)));
  ProxyParse r = parse_proxy_header(buffered_, &header_);
  if (r.status != Status::kNeedMore) std::string().swap(buffered_);
  // The shorter prefix needed more, so the header ends inside this chunk.
  if (r.status == Status::kDone) r.consumed -= before;
  return r;
}

void append_proxy_local_header(ProxyVersion version, std::string* out) {
  if (version == ProxyVersion::kV1) {
    out->append("PROXY UNKNOWN\r\n");
  } else {
    append_v2_fixed(kCommandLocal, 0x00, 0, out);
  }
}

void append_proxy_header(ProxyVersion version, const sockaddr* source, const sockaddr* destination,
                         std::string* out) {
  SocketAddress src, dst;
  if (!normalised(source, &src) || !normalised(destination, &dst)) {
    append_proxy_local_header(version, out);
    return;
  }
  if (src.storage.ss_family != dst.storage.ss_family) {
    map_to_v6(&src);
    map_to_v6(&dst);
  }
  const bool v4 = src.storage.ss_family == AF_INET;
  if (version == ProxyVersion::kV1) {
    char src_text[INET6_ADDRSTRLEN], dst_text[INET6_ADDRSTRLEN];
    const int family = v4 ? AF_INET : AF_INET6;
    inet_ntop(family, ip_bytes(src), src_text, sizeof src_text);
    inet_ntop(family, ip_bytes(dst), dst_text, sizeof dst_text);
    out->append(v4 ? "PROXY TCP4 " : "PROXY TCP6 ");
    out->append(src_text).append(" ").append(dst_text).append(" ");
    out->append(std::to_string(ntohs(port_network_order(src)))).append(" ");
    out->append(std::to_string(ntohs(port_network_order(dst)))).append("\r\n");
    return;
  }
  const size_t address_length = v4 ? 4 : 16;
  append_v2_fixed(kCommandProxy, v4 ? 0x11 : 0x21, static_cast<uint16_t>(2 * address_length + 4), out);
  out->append(reinterpret_cast<const char*>(ip_bytes(src)), address_length);
  out->append(reinterpret_cast<const char*>(ip_bytes(dst)), address_length);
  const uint16_t ports[2] = {port_network_order(src), port_network_order(dst)};
  out->append(reinterpret_cast<const char*>(ports), sizeof ports);
}

}  // namespace limpet::net
