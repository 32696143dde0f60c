// PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt): the header an L4 balancer in front of
// us sends first on a connection to say who the client is, and the one we send to backends that
// expect it. Pure byte parsing and building, no libuv and no allocation while parsing a header
// that arrives in one piece; any thread.
#pragma once

#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "limpet/net/socket.hpp"

namespace limpet::net {

// The longest v1 line (CRLF included, spec §2.1), and our bound on a whole v2 header with its
// TLVs: a sender has no reason to need more, and a reader must not buffer without limit.
constexpr size_t kProxyV1MaxLength = 107;
constexpr size_t kProxyV2MaxLength = 4096;
constexpr size_t kProxyMaxLength = kProxyV2MaxLength;

struct ProxyHeader {
  uint8_t version = 0;  // 1 or 2
  // False for v1 UNKNOWN, v2 LOCAL and v2 families without IP addresses (UNSPEC, UNIX, or not
  // TCP): the connection's own endpoints stand.
  bool has_addresses = false;
  SocketAddress source;       // the client
  SocketAddress destination;  // the address the client connected to

  friend bool operator==(const ProxyHeader& a, const ProxyHeader& b);
};

struct ProxyParse {
  enum class Status : uint8_t { kNeedMore, kDone, kError };
  Status status = Status::kNeedMore;
  size_t consumed = 0;          // kDone: bytes of the header; what follows is the connection's
  const char* error = nullptr;  // kError: a short static reason, for logs
};

// A header at the start of `data` (all bytes received so far). kNeedMore only while `data` is a
// proper prefix of something that can still become a valid header: garbage is refused as soon
// as a byte tells (a first byte that is neither 'P' nor '\r' gives "no PROXY protocol header"),
// and `data` of kProxyMaxLength bytes or more is never kNeedMore. `*out` is written on kDone.
ProxyParse parse_proxy_header(std::string_view data, ProxyHeader* out);

// The same over a connection's reads: feed them in order until kDone or kError (then stop). A
// header split across reads is buffered (at most kProxyMaxLength bytes); a whole one is parsed
// in place. On kDone, `consumed` counts the bytes of the *last* chunk that belonged to the
// header: the rest of that chunk is the start of the application's bytes.
class ProxyHeaderReader {
 public:
  ProxyParse feed(std::string_view chunk);
  const ProxyHeader& header() const { return header_; }

 private:
  std::string buffered_;
  ProxyHeader header_;
};

enum class ProxyVersion : uint8_t { kV1 = 1, kV2 = 2 };

// Appends a PROXY header for a TCP connection from `source` to `destination`. IPv4-mapped IPv6
// addresses are sent as IPv4; when the two families still differ, the IPv4 one is mapped into
// IPv6. Either address missing or not IP: the LOCAL / UNKNOWN header below.
void append_proxy_header(ProxyVersion version, const sockaddr* source, const sockaddr* destination,
                         std::string* out);
// v2 LOCAL / v1 "PROXY UNKNOWN": a connection of our own (a health check), no client behind it.
void append_proxy_local_header(ProxyVersion version, std::string* out);

}  // namespace limpet::net
