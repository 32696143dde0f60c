#include "limpet/proxy/relay.hpp"

#include "limpet/net/out_queue.hpp"

namespace limpet::proxy {

bool Relay::sink_full() const {
  if (sink_ == nullptr) return false;
  const size_t pending = sink_->pending();
  if (pending > net::OutQueue::kHighWater) {
    sink_blocked_ = true;
  } else if (pending <= net::OutQueue::kLowWater) {
    sink_blocked_ = false;
  }
  return sink_blocked_;
}

void Relay::write(std::span<const std::string_view> parts) {
  sink_->write(parts);
  if (sink_full()) update();
}

void Relay::update() {
  if (source_ == nullptr || source_->closing()) return;
  if (!held_ && !source_ended_ && !sink_full()) {
    source_->start_reading();
  } else {
    source_->stop_reading();
  }
}

Relay::Waiting Relay::waiting() const {
  if (sink_full()) return Waiting::kSink;
  if (!held_ && !source_ended_) return Waiting::kSource;
  return Waiting::kNobody;
}

}  // namespace limpet::proxy
