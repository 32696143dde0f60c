// What speaks the client's protocol on a ClientConnection until a 101 turns it into a tunnel:
// an HttpSession (HTTP/1.x) or an Http2Session. The connection routes its client stream's events
// and its one timer here. Owning worker only.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "limpet/proxy/deadline.hpp"

namespace limpet::proxy {

class ClientSession {
 public:
  virtual ~ClientSession() = default;
  virtual void on_client_data(std::string_view data) = 0;
  virtual void on_client_end(int status) = 0;
  virtual void on_client_writable() = 0;
  // What the connection's timer stands for now, and its expiry.
  virtual DeadlineSpec deadline() const = 0;
  virtual void on_deadline(Deadline kind) = 0;
  // Idle: close now; busy: close once the requests in progress are answered.
  virtual void begin_shutdown() = 0;
  // The client connection is closing: every exchange lets go of its backend now.
  virtual void abort() = 0;
  // Tunnels carried inside the session (RFC 8441 streams): a Close 1012 for those to these
  // backends, or `code` for all, after a delay from close_spread.
  virtual void drain_tunnels_to(const std::vector<uint32_t>& backend_ids) { (void)backend_ids; }
  virtual void close_tunnels_cleanly(uint16_t code, uint64_t delay_ms) {
    (void)code;
    (void)delay_ms;
  }
};

}  // namespace limpet::proxy
