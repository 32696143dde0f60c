// Sticky keys: the Engine.IO sid and the consistent-hash key of a request (design §5), read from
// its parsed head. Pure functions of their arguments, no allocation beyond the returned string;
// called by Upstream::route on any worker. CidrSet is built on the main thread, then read-only.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/http/message.hpp"
#include "limpet/util/result.hpp"

namespace limpet::balancer {

// Decodes %XX escapes; '+' becomes a space when `plus_is_space` (query strings are
// application/x-www-form-urlencoded, which is what Node's querystring — and so Engine.IO — reads).
// A malformed escape ("%zz", a trailing "%4") is kept as written, like Node does.
std::string percent_decode(std::string_view s, bool plus_is_space);
// The same into `out` (replaced), whose buffer is kept: no allocation once it has grown.
void percent_decode_into(std::string_view s, bool plus_is_space, std::string& out);

// The value of query parameter `name` (names and values percent-decoded, names compared exactly).
// The first occurrence decides: "sid=a&sid=b" gives "a", and "sid=&sid=b" gives nothing, since
// an empty value counts as absent. Empty pieces and pieces without '=' are tolerated ("a&&=b&sid"
// has a parameter "sid" with an empty value, i.e. none).
std::optional<std::string> query_param(std::string_view query, std::string_view name);
// The same into `value` (replaced, buffer kept); false when absent or empty.
bool query_param_into(std::string_view query, std::string_view name, std::string& value);

// True when `path` is one of the Engine.IO paths: "/socket.io/" matches "/socket.io/" and
// anything under it, and also "/socket.io" (clients with addTrailingSlash: false).
bool is_engineio_path(std::string_view path, const std::vector<std::string>& engineio_paths);

// The Engine.IO session id of a request on an Engine.IO path; nullopt off those paths, on the
// handshake (no sid) or with an empty sid.
std::optional<std::string> engineio_sid(const http::RequestHead& head,
                                        const std::vector<std::string>& engineio_paths);

// First header `name` (case-insensitive), surrounding blanks removed; empty counts as absent.
std::optional<std::string> header_value(const http::HeadBase& head, std::string_view name);

// Cookie `name` (case-sensitive, RFC 6265) in one Cookie header value ("a=1; b=\"2\""): blanks
// around names and values are ignored, one pair of surrounding double quotes is removed, pairs
// without '=' are skipped. The first occurrence decides; empty counts as absent.
std::optional<std::string> cookie_in(std::string_view cookie_header, std::string_view name);
// The same over every Cookie header of the request, in order (some clients send several).
std::optional<std::string> cookie_value(const http::HeadBase& head, std::string_view name);

// An IPv4 or IPv6 address in binary. IPv4-mapped IPv6 (::ffff:a.b.c.d) is stored as IPv4, so a
// dual-stack listener and X-Forwarded-For give the same client the same key.
struct IpAddress {
  int family = 0;  // AF_INET, AF_INET6, 0 = invalid
  uint8_t bytes[16] = {};
};

// Parses "1.2.3.4", "::1", "[::1]", "1.2.3.4:5678" and "[::1]:443" (ports appear in some
// X-Forwarded-For hops). Blanks around the text are ignored.
std::optional<IpAddress> parse_ip(std::string_view text);
// The address of a socket address (AF_INET/AF_INET6, IPv4-mapped stored as IPv4); nullopt else.
std::optional<IpAddress> ip_of(const sockaddr* addr);
std::string to_string(const IpAddress& ip);

// A set of CIDR blocks ("10.0.0.0/8", "::1/128", "127.0.0.1" = /32): upstream.trusted_proxies
// and listener.trusted_proxies.
class CidrSet {
 public:
  static Result<CidrSet> parse(const std::vector<std::string>& cidrs);
  bool contains(const IpAddress& ip) const;
  bool empty() const { return blocks_.empty(); }

 private:
  struct Block {
    IpAddress base;
    int prefix = 0;
  };
  std::vector<Block> blocks_;
};

// The client address used for the `ip` key. The peer itself, unless the peer is a trusted proxy:
// then X-Forwarded-For (all such headers, in order, as one list) is walked from the right,
// skipping trusted hops; the first untrusted hop is the client. An unparsable hop stops the walk
// at the last trusted address (it cannot be believed); if every hop is trusted, the left-most
// one is the client. Returned as normalised text ("::ffff:1.2.3.4" becomes "1.2.3.4"); a peer
// that is not an IP address is returned as given.
std::string client_address(const http::RequestHead& head, std::string_view peer, const CidrSet& trusted);

// The value of one hash-key source, nullopt when absent or empty.
std::optional<std::string> extract_key(const config::HashKeySource& source, const http::RequestHead& head,
                                       std::string_view peer, const CidrSet& trusted);

// The first present key of an ordered list (upstream.hash_keys).
struct StickyKey {
  size_t source = 0;  // index into the list
  std::string value;
};
std::optional<StickyKey> first_key(const std::vector<config::HashKeySource>& sources,
                                   const http::RequestHead& head, std::string_view peer,
                                   const CidrSet& trusted);

}  // namespace limpet::balancer
