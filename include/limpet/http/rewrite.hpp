// Builds the heads limpet sends: a request head for the backend (hop-by-hop headers removed,
// X-Forwarded-* added, Host kept) and a response head for the client. Pure functions; any thread.
#pragma once

#include <string>
#include <string_view>

#include "limpet/http/message.hpp"

namespace limpet::http {

// True for headers that describe one connection and are never forwarded (RFC 9110 §7.6.1):
// Connection, Keep-Alive, TE, Trailer, Transfer-Encoding (re-added by framing), Upgrade,
// Proxy-*, and every header named in `connection_header`.
bool is_hop_by_hop(std::string_view name, std::string_view connection_header);

struct ForwardInfo {
  std::string_view client_ip;
  bool tls = false;            // X-Forwarded-Proto
  bool add_forwarded = false;  // RFC 7239 Forwarded header too
};

// Request head for the backend. Body framing: chunked bodies are re-chunked by the proxy, so
// "Transfer-Encoding: chunked" is written when head.chunked; Content-Length is kept.
// A WebSocket upgrade keeps "Connection: Upgrade" and "Upgrade: websocket".
void build_request_head(const RequestHead& head, const ForwardInfo& info, std::string* out);

enum class BodyFraming { kNone, kLength, kChunked, kUntilClose };

struct ResponseHeadOptions {
  BodyFraming framing = BodyFraming::kNone;
  bool close = false;                // add "Connection: close"
  bool upgrade = false;              // 101: keep Connection: upgrade / Upgrade
  std::string_view set_cookie;       // extra Set-Cookie value, if any
};

void build_response_head(const ResponseHead& head, const ResponseHeadOptions& options,
                         std::string* out);

// A complete small response limpet answers itself (errors): status line, Content-Type text/plain,
// Content-Length, optional Connection: close, body = reason + "\n".
std::string simple_response(int status, bool close);
const char* status_reason(int status);

}  // namespace limpet::http
