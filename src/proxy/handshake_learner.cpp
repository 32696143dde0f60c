#include "limpet/proxy/handshake_learner.hpp"

#include <algorithm>

#include "limpet/http/engineio.hpp"

namespace limpet::proxy {

void HandshakeLearner::begin(const balancer::Upstream& upstream, int backend,
                             const http::ResponseHead& head) {
  upstream_ = &upstream;
  backend_ = backend;
  body_.clear();
  sid_.clear();
  for (const auto& h : head.headers) {
    if (!http::iequals(h.name, "set-cookie")) continue;
    if (auto sid = http::engineio::sid_from_set_cookie(h.value)) learn(*sid);
  }
  active_ = head.status == 200;
  // A compressed body cannot be read here; rather than guess, count it (design §2).
  if (active_ && head.header("content-encoding")) give_up();
}

void HandshakeLearner::on_body(std::string_view data) {
  if (!active_) return;
  body_.append(data.substr(0, http::engineio::kMaxHandshakeBody - body_.size()));
  parse(false);
}

void HandshakeLearner::on_end() {
  if (active_) parse(true);
}

void HandshakeLearner::parse(bool final) {
  auto parsed = http::engineio::parse_handshake(body_);
  switch (parsed.status) {
    case http::engineio::HandshakeStatus::kFound:
      learn(parsed.sid);
      active_ = false;
      return;
    case http::engineio::HandshakeStatus::kNeedMore:
      if (!final && body_.size() < http::engineio::kMaxHandshakeBody) return;
      break;
    case http::engineio::HandshakeStatus::kInvalid:
      break;
  }
  give_up();
}

void HandshakeLearner::learn(std::string_view sid) {
  upstream_->learn_session(sid, backend_);
  sid_.assign(sid);
}

void HandshakeLearner::give_up() {
  upstream_->note_unparsable_handshake();
  active_ = false;
}

}  // namespace limpet::proxy
