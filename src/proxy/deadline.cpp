#include "limpet/proxy/deadline.hpp"

namespace limpet::proxy {

const char* to_string(Deadline kind) {
  switch (kind) {
    case Deadline::kNone: return "none";
    case Deadline::kProxyHeader: return "PROXY header";
    case Deadline::kRequestHead: return "request head";
    case Deadline::kKeepAlive: return "keep-alive";
    case Deadline::kClientBody: return "client body";
    case Deadline::kClientSend: return "client send";
    case Deadline::kConnect: return "connect";
    case Deadline::kUpstreamSend: return "upstream send";
    case Deadline::kFirstByte: return "first byte";
    case Deadline::kUpstreamIdle: return "upstream idle";
    case Deadline::kTunnelIdle: return "tunnel idle";
    case Deadline::kCloseDelay: return "close delay";
    case Deadline::kCloseReply: return "close reply";
    case Deadline::kLinger: return "linger";
    case Deadline::kSessionStore: return "session store";
  }
  return "?";
}

bool extends_on_activity(Deadline kind) {
  switch (kind) {
    case Deadline::kClientBody:
    case Deadline::kClientSend:
    case Deadline::kUpstreamSend:
    case Deadline::kUpstreamIdle:
    case Deadline::kTunnelIdle:
      return true;
    default:
      return false;
  }
}

bool blames_backend(Deadline kind) {
  return kind == Deadline::kConnect || kind == Deadline::kUpstreamSend ||
         kind == Deadline::kFirstByte || kind == Deadline::kUpstreamIdle;
}

}  // namespace limpet::proxy
