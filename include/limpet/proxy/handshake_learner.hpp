// Learns the Engine.IO session id a backend issues in a handshake response — from an `io`
// Set-Cookie and from the body's open packet (v4 and v3 framing, read as it streams past) — and
// hands it to the upstream's affinity table. Keeps its capture buffer from one exchange to the
// next. Owning worker only.
#pragma once

#include <string>
#include <string_view>

#include "limpet/balancer/upstream.hpp"
#include "limpet/http/message.hpp"

namespace limpet::proxy {

class HandshakeLearner {
 public:
  // The head of a handshake response from backend `backend`.
  void begin(const balancer::Upstream& upstream, int backend, const http::ResponseHead& head);
  void on_body(std::string_view data);
  // The body ended: a sid still not found is counted as an unparsable handshake.
  void on_end();
  void reset() {
    active_ = false;
    sid_.clear();
  }

  // Still reading the body for a sid.
  bool reading() const { return active_; }
  // The sid learned from this response (the last one, if a cookie and the body both carried
  // one); empty while none was.
  std::string_view sid() const { return sid_; }

 private:
  void learn(std::string_view sid);
  void parse(bool final);
  void give_up();

  const balancer::Upstream* upstream_ = nullptr;
  std::string body_;  // first bytes of the body
  std::string sid_;
  int backend_ = 0;
  bool active_ = false;
};

}  // namespace limpet::proxy
