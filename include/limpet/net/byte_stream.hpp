// What a proxy::Relay moves bytes between: a TCP stream (net::Stream), or one stream of an
// HTTP/2 connection (proxy/http2_session), whose "queue" is the bytes its flow-control window
// has not let out yet and whose "reading" is whether its window is opened again. The relay and
// the tunnel decide backpressure through this alone, so they need not know which it is.
// Owning worker only.
#pragma once

#include <cstddef>
#include <span>
#include <string_view>

namespace limpet::net {

class ByteStream {
 public:
  // Source side: deliver more of what the peer sends, or stop.
  virtual void start_reading() = 0;
  virtual void stop_reading() = 0;
  virtual bool closing() const = 0;
  // Sink side: the pieces in order, and how much of what was written has not left yet.
  virtual void write(std::span<const std::string_view> parts) = 0;
  virtual size_t pending() const = 0;
  // End our sending side once everything written has left (a FIN, or END_STREAM).
  virtual void shutdown_after_writes() = 0;
  virtual bool write_side_shut() const = 0;

  void write(std::string_view data) { write(std::span<const std::string_view>(&data, 1)); }

 protected:
  ~ByteStream() = default;
};

}  // namespace limpet::net
