// Parsed HTTP/1.1 message heads. The parser fills `storage` and points every string_view into it,
// so a parsed head is held by pointer and never copied or moved (SSO would dangle the views).
// A parser reuses one head object for every message it parses (clear() keeps the buffers).
// Tests may point the views at string literals instead. Owning worker only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/util/strings.hpp"

namespace limpet::http {

struct Header {
  std::string_view name;
  std::string_view value;
};

// Header names and tokens compare ignoring ASCII case. http::iequals is util's one iequals
// (util/strings.hpp), under the name its many http and proxy callers use.
using limpet::iequals;
// True when a comma-separated header value contains `token` (case-insensitive), e.g.
// "keep-alive, Upgrade" contains "upgrade".
bool has_token(std::string_view list, std::string_view token);
// The `timeout` parameter of a Keep-Alive header value ("timeout=5, max=1000"), in seconds: how
// long the server keeps an idle connection (Node's HTTP server sends it). nullopt if absent or
// not a number.
std::optional<uint64_t> keep_alive_timeout_s(std::string_view value);

struct HeadBase {
  std::string storage;          // raw bytes of the head the views point into
  std::vector<Header> headers;  // in arrival order, duplicates kept
  uint8_t http_major = 1;
  uint8_t http_minor = 1;
  bool keep_alive = true;       // per llhttp_should_keep_alive()
  bool chunked = false;
  std::optional<uint64_t> content_length;

  // First header with this name (case-insensitive), or nullopt.
  std::optional<std::string_view> header(std::string_view name) const;
  // Empties the head for the next message, keeping its buffers (no allocation per message).
  void clear();
};

struct RequestHead : HeadBase {
  std::string_view method;
  std::string_view target;  // as sent: "/socket.io/?EIO=4&transport=polling"
  std::string_view path;    // target up to '?'
  std::string_view query;   // after '?', without it; empty if none
  bool upgrade = false;     // Connection: upgrade + Upgrade header present
  bool websocket = false;   // a valid RFC 6455 upgrade (Upgrade: websocket, key, version 13)
  void clear();
};

struct ResponseHead : HeadBase {
  int status = 0;
  std::string_view reason;
  void clear();
};

}  // namespace limpet::http
