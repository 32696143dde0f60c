// Engine.IO awareness on the response side: reads the session id a backend issued, from the
// handshake response body (v4 and v3 framing) or from an `io` Set-Cookie, so the affinity table
// can learn it (design §2). Pure functions; called by the worker that owns the exchange.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace limpet::http::engineio {

// Bytes of a handshake body worth examining: a real handshake is ~120 bytes; past this the body
// is something else and the parser stops asking for more.
inline constexpr size_t kMaxHandshakeBody = 4096;
// Longest sid accepted (Engine.IO's default is 20 characters; custom generateId may be longer).
inline constexpr size_t kMaxSidLength = 128;

enum class HandshakeStatus {
  kFound,     // `sid` holds the session id
  kNeedMore,  // a valid prefix: call again with more of the body
  kInvalid,   // not a handshake, a malformed one, a sid with characters outside [A-Za-z0-9_-],
              // or no sid within kMaxHandshakeBody bytes
};

struct HandshakeResult {
  HandshakeStatus status = HandshakeStatus::kInvalid;
  std::string sid;
};

// Parses the start of a polling handshake response body:
//   v4: 0{"sid":"...","upgrades":["websocket"],"pingInterval":25000,...}
//   v3: 96:0{"sid":"...",...}2:40   (length-prefixed packets; later packets are ignored)
// The JSON object is scanned for real (strings with escapes, nested values skipped), so "sid"
// may be any key and whitespace is allowed; the answer is kFound as soon as the sid's string
// value is complete. `body` is everything received so far, from its first byte.
HandshakeResult parse_handshake(std::string_view body);

// Convenience: the sid, or nullopt for kNeedMore and kInvalid alike.
std::optional<std::string> parse_handshake_sid(std::string_view body);

// The session id in a Set-Cookie value such as "io=Xh3k...; Path=/; HttpOnly; SameSite=Lax"
// (Engine.IO's `cookie` option). nullopt for another cookie, an empty or malformed value, or a
// deletion (Max-Age=0).
std::optional<std::string> sid_from_set_cookie(std::string_view set_cookie_value,
                                               std::string_view cookie_name = "io");

bool valid_sid(std::string_view sid);

}  // namespace limpet::http::engineio
