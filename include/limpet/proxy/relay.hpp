// One direction of a proxied byte flow, from a source stream to a sink stream, and the only code
// that decides whether the source is read: not while the sink's queue is above its high-water mark
// (resumed once it drained under the low-water mark), not after the source ended, not while the
// owner holds it. It also tells whom the flow waits on, so that a deadline blames the side that
// stalled and never the other one. Owning worker only.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "limpet/net/byte_stream.hpp"

namespace limpet::proxy {

class Relay {
 public:
  enum class Waiting : uint8_t {
    kNobody,  // the source ended (or is held) and the sink keeps up
    kSource,  // ready to take more: the source has to send
    kSink,    // the sink's queue is full: its peer has to read
  };

  Relay() = default;
  Relay(net::ByteStream* source, net::ByteStream* sink) : source_(source), sink_(sink) {}

  // The sink may change (a retried exchange, a request body that ended) or be absent.
  void set_sink(net::ByteStream* sink) {
    sink_ = sink;
    sink_blocked_ = false;
    update();
  }
  net::ByteStream* sink() const { return sink_; }
  net::ByteStream* source() const { return source_; }

  // The owner wants no bytes from the source for now (its input buffer is full).
  void hold(bool held) {
    held_ = held;
    update();
  }
  void source_ended() {
    source_ended_ = true;
    update();
  }
  bool ended() const { return source_ended_; }

  // Bytes for the sink, gathered into one write; reading stops if the sink is now too full.
  void write(std::span<const std::string_view> parts);
  void write(std::string_view data) { write(std::span<const std::string_view>(&data, 1)); }

  // Re-decides reading: call when the sink became writable or the owner's view changed.
  void update();
  Waiting waiting() const;

 private:
  // Full from above the high-water mark until drained under the low-water mark (hysteresis:
  // reading does not flap around one threshold).
  bool sink_full() const;

  net::ByteStream* source_ = nullptr;
  net::ByteStream* sink_ = nullptr;
  bool held_ = false;
  bool source_ended_ = false;
  mutable bool sink_blocked_ = false;
};

}  // namespace limpet::proxy
