// The one timer of a client connection stands for one deadline at a time, and what it stands for
// is stored, not inferred from flags: on expiry the kind says who stalled (the client or the
// backend) and so what happens — a 408 and a close for a client, a 504 and a passive health
// failure for a backend. Pure definitions; any thread.
#pragma once

#include <cstdint>

#include "limpet/config/config.hpp"

namespace limpet::proxy {

enum class Deadline : uint8_t {
  kNone,
  kProxyHeader,   // listener.proxy_protocol_timeout: the whole PROXY header, from the accept
  kRequestHead,   // listener.header_timeout: the whole head, from its first byte
  kKeepAlive,     // listener.keepalive_timeout: idle between requests
  kClientBody,    // listener.body_timeout: the client sends no more of its request body
  kClientSend,    // listener.send_timeout: the client reads none of our response
  kConnect,       // upstream.connect_timeout
  kUpstreamSend,  // upstream.send_timeout: the backend reads none of the request body
  kFirstByte,     // upstream.read_timeout: request sent, no response head yet
  kUpstreamIdle,  // upstream.read_timeout: the response stalls mid-body
  kTunnelIdle,    // listener.tunnel_idle_timeout: nothing either way
  kCloseDelay,    // a clean tunnel close waits for its slot in close_spread
  kCloseReply,    // both sides have to answer our Close frame
  kLinger,        // after an error answer: drain the client's input, then close
  kSessionStore,  // a lookup or a handshake's publish waits for the session store (a backstop:
                  // the store answers within its own timeouts)
};

const char* to_string(Deadline kind);

// A deadline that stands for inactivity moves on with every sign of life; the others run from
// when they were set (a head has header_timeout in all, however it trickles in).
bool extends_on_activity(Deadline kind);

// The backend is the one that stalled: the expiry counts against its health.
bool blames_backend(Deadline kind);

// A configured duration as the milliseconds a deadline takes.
inline uint64_t to_ms(config::Millis d) { return static_cast<uint64_t>(d.count()); }

struct DeadlineSpec {
  Deadline kind = Deadline::kNone;
  uint64_t ms = 0;
};

}  // namespace limpet::proxy
