// What speaks the client's protocol on a ClientConnection until a 101 turns it into a tunnel:
// an HttpSession (HTTP/1.x) or an Http2Session. The connection routes its client stream's events
// and its one timer here. Owning worker only.
#pragma once

#include <string_view>

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
};

}  // namespace limpet::proxy
