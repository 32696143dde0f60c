#include "limpet/proxy/tunnel.hpp"

#include <algorithm>

#include "limpet/proxy/client_connection.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {
namespace {

// How long a tunnel waits for both sides to answer an injected Close frame.
constexpr uint64_t kCloseReplyMs = 3000;

const char* close_reason(uint16_t code) {
  switch (code) {
    case Tunnel::kCloseGoingAway: return "going away";
    case Tunnel::kCloseProtocolError: return "protocol error";
    case Tunnel::kCloseTooBig: return "message too big";
    default: return "service restart";
  }
}

}  // namespace

Tunnel::Tunnel(TunnelOwner& conn, UpgradeHandoff handoff)
    : conn_(conn),
      upstream_(handoff.upstream),
      lease_(std::move(handoff.lease)),
      session_id_(handoff.session_id.empty() ? nullptr : std::make_unique<const std::string>(handoff.session_id)),
      counted_in_affinity_(handoff.session_known),
      up_{Relay(conn.tunnel_client(), handoff.upstream),
          http::websocket::FrameTracker(conn.listener().upstream->config().max_message_size,
                                        http::websocket::FrameTracker::Masking::kRequired)},
      down_{Relay(handoff.upstream, conn.tunnel_client()),
            http::websocket::FrameTracker(conn.listener().upstream->config().max_message_size,
                                          http::websocket::FrameTracker::Masking::kForbidden)} {
  upstream_->set_delegate(this);
  opened_ms_ = last_activity_ms_ = uv_now(conn_.worker()->loop);
  lease_.state().tunnels.fetch_add(1, std::memory_order_relaxed);
  if (counted_in_affinity_) lease_.state().upgraded_sessions.fetch_add(1, std::memory_order_relaxed);
  lease_.end_placing();  // the session exists: it counts as a tunnel from here
  conn_.worker()->counters.tunnels_opened.fetch_add(1, std::memory_order_relaxed);
  conn_.listener().counters->tunnels.fetch_add(1, std::memory_order_relaxed);
}

Tunnel::~Tunnel() {
  drop_upstream();
  log_close();
  lease_.state().tunnels.fetch_sub(1, std::memory_order_relaxed);
  conn_.listener().counters->tunnels.fetch_sub(1, std::memory_order_relaxed);
  if (counted_in_affinity_) lease_.state().upgraded_sessions.fetch_sub(1, std::memory_order_relaxed);
  if (session_id_) {
    const balancer::Upstream& upstream = *conn_.listener().upstream;
    upstream.forget_session(*session_id_);
    if (store::SessionStore* sessions = conn_.worker()->sessions) sessions->forget(upstream.config().name, *session_id_);
  }
}

void Tunnel::note_end(TunnelCloser by, TunnelCloseReason why) {
  if (closed_by_ != TunnelCloser::kNone) return;
  closed_by_ = by;
  close_reason_ = why;
}

void Tunnel::log_close() {
  WorkerContext& worker = *conn_.worker();
  // Nothing was seen to end it: the worker closed it, at the end of a shutdown or on a failure.
  note_end(TunnelCloser::kLimpet, worker.shutting_down ? TunnelCloseReason::kShutdown : TunnelCloseReason::kError);
  const uint64_t duration_ms = uv_now(worker.loop) - opened_ms_;
  worker.counters.tunnel_duration.observe_us(duration_ms * 1000);
  TunnelEntry entry;
  entry.client_ip = conn_.client_ip();
  entry.upstream = conn_.listener().upstream->config().name;
  entry.backend = lease_.name();
  if (session_id_) entry.session_id = *session_id_;
  entry.duration_ms = duration_ms;
  entry.bytes_to_backend = up_.bytes;
  entry.bytes_to_client = down_.bytes;
  entry.messages_to_backend = up_.frames.messages();
  entry.messages_to_client = down_.frames.messages();
  entry.closed_by = closed_by_;
  entry.reason = close_reason_;
  switch (closed_by_) {
    case TunnelCloser::kClient: entry.close_code = up_.frames.first_close_code(); break;
    case TunnelCloser::kBackend: entry.close_code = down_.frames.first_close_code(); break;
    case TunnelCloser::kLimpet: entry.close_code = close_code_; break;
    case TunnelCloser::kNone: break;
  }
  worker.access_log.write(entry);
}

void Tunnel::start(std::string_view upstream_leftover, std::string_view early_client_bytes) {
  if (!upstream_leftover.empty()) forward(down_, upstream_leftover);
  if (!early_client_bytes.empty() && upstream_ != nullptr) forward(up_, early_client_bytes);
  if (upstream_ == nullptr || conn_.tunnel_client()->closing()) return;
  up_.relay.update();
  down_.relay.update();
  if (conn_.worker()->shutting_down) {
    close_cleanly(kCloseGoingAway, conn_.worker()->close_delay_ms());
  }
}

void Tunnel::drop_upstream() {
  if (upstream_ == nullptr) return;
  upstream_->set_delegate(nullptr);
  upstream_->close();
  upstream_ = nullptr;
}

void Tunnel::forward(Direction& d, std::string_view data) {
  if (upstream_ == nullptr) return;
  last_activity_ms_ = uv_now(conn_.worker()->loop);  // the loop's cached time: no system call
  if (d.frames.error() != http::websocket::FrameTracker::Error::kNone) return;  // refused: closing
  d.bytes += data.size();
  uint64_t before = d.frames.messages();
  size_t boundary = d.frames.feed(data);
  if (d.frames.closes() > 0) note_end(toward_backend(d) ? TunnelCloser::kClient : TunnelCloser::kBackend, TunnelCloseReason::kClosed);
  auto& counter = toward_backend(d) ? conn_.worker()->counters.ws_messages_to_backend
                                    : conn_.worker()->counters.ws_messages_to_client;
  counter.fetch_add(d.frames.messages() - before, std::memory_order_relaxed);
  switch (d.frames.error()) {
    case http::websocket::FrameTracker::Error::kTooBig:
      refuse_frame(d, data.substr(0, boundary), kCloseTooBig);
      return;
    case http::websocket::FrameTracker::Error::kProtocol:
      refuse_frame(d, data.substr(0, boundary), kCloseProtocolError);
      return;
    case http::websocket::FrameTracker::Error::kNone:
      break;
  }
  if (d.close_sent) {
    // That side already got our Close: nothing more may follow it; watch for the answers.
    finish_if_answered();
    return;
  }
  if (close_started_ && boundary > 0) {
    // Up to the last frame that ends in this chunk, then our Close; what follows is dropped.
    // No boundary yet: the frame in progress goes on whole.
    d.relay.write(data.substr(0, boundary));
    inject_close(d);
    return;
  }
  d.relay.write(data);
}

// The frame that broke the rules (a framing error: 1002; over max_message_size: 1009) and all
// after it are never forwarded: the receiver would have to fail the connection anyway (RFC 6455
// §7.1.7), and a proxy that passes frames it cannot delimit cannot close cleanly later. What came
// before the frame goes on, the receiver gets a Close (control frames may interleave a
// fragmented message), and so does the sender once its own direction reaches a frame boundary.
void Tunnel::refuse_frame(Direction& d, std::string_view up_to_boundary, uint16_t code) {
  const char* toward = toward_backend(d) ? "to the backend" : "to the client";
  if (code == kCloseTooBig) {
    LOG_INFO("tunnel from %s: a message %s exceeds max_message_size (%llu bytes): closing with 1009",
             conn_.client_ip().data(), toward,
             static_cast<unsigned long long>(conn_.listener().upstream->config().max_message_size));
    conn_.worker()->counters.ws_messages_too_big.fetch_add(1, std::memory_order_relaxed);
  } else {
    LOG_INFO("tunnel from %s: a malformed WebSocket frame %s: closing with 1002", conn_.client_ip().data(), toward);
    conn_.worker()->counters.ws_protocol_errors.fetch_add(1, std::memory_order_relaxed);
  }
  note_end(TunnelCloser::kLimpet, code == kCloseTooBig ? TunnelCloseReason::kTooBig : TunnelCloseReason::kProtocolError);
  if (!up_to_boundary.empty()) d.relay.write(up_to_boundary);
  d.relay.hold(true);  // the rest of the sender's bytes are never forwarded
  close_code_ = code;
  close_started_ = true;
  inject_close(d);
  Direction& toward_sender = other(d);
  if (upstream_ != nullptr && toward_sender.frames.at_boundary()) inject_close(toward_sender);
  start_close_replies();
}

void Tunnel::close_cleanly(uint16_t code, uint64_t delay_ms) {
  if (close_code_ != 0) return;
  close_code_ = code;
  close_deadline_ = uv_now(conn_.worker()->loop) + delay_ms;
  conn_.tunnel_deadline_changed();
}

void Tunnel::start_close_replies() {
  close_deadline_ = uv_now(conn_.worker()->loop) + kCloseReplyMs;
  conn_.tunnel_deadline_changed();
}

uint64_t Tunnel::idle_ms() const { return to_ms(conn_.listener().config->tunnel_idle_timeout); }

bool Tunnel::idle_expired(uint64_t now_ms) const {
  return close_deadline_ == 0 && now_ms - last_activity_ms_ >= idle_ms();
}

DeadlineSpec Tunnel::deadline() const {
  const uint64_t idle = idle_ms();
  if (close_deadline_ != 0) {
    const uint64_t now = uv_now(conn_.worker()->loop);
    const uint64_t left = close_deadline_ > now ? close_deadline_ - now : 0;
    if (left <= idle) return {close_started_ ? Deadline::kCloseReply : Deadline::kCloseDelay, left};
  }
  return {Deadline::kTunnelIdle, idle};
}

void Tunnel::on_deadline(Deadline kind) {
  switch (kind) {
    case Deadline::kCloseDelay:
      note_end(TunnelCloser::kLimpet,
               close_code_ == kCloseServiceRestart ? TunnelCloseReason::kDrain : TunnelCloseReason::kShutdown);
      close_started_ = true;
      if (up_.frames.at_boundary()) inject_close(up_);
      if (upstream_ != nullptr && down_.frames.at_boundary()) inject_close(down_);
      if (upstream_ != nullptr) start_close_replies();
      return;
    case Deadline::kTunnelIdle:
      LOG_DEBUG("tunnel idle timeout from %s", conn_.client_ip().data());
      note_end(TunnelCloser::kLimpet, TunnelCloseReason::kIdle);
      [[fallthrough]];
    default:  // kCloseReply: the sides did not answer our Close in time
      conn_.close();
      return;
  }
}

void Tunnel::inject_close(Direction& d) {
  if (d.close_sent) return;
  d.close_sent = true;
  net::ByteStream* to = d.relay.sink();
  if (to->write_side_shut()) {
    // That direction is already half-closed (its source ended): no frame can follow, and the
    // peer's answer is the EOF we propagate.
    finish_if_answered();
    return;
  }
  d.answer_mark = other(d).frames.closes();
  const bool masked = toward_backend(d);
  to->write(http::websocket::close_frame(close_code_, close_reason(close_code_), masked,
                                         masked ? static_cast<uint32_t>(conn_.worker()->rng()) : 0));
  finish_if_answered();
}

void Tunnel::finish_if_answered() {
  if (!up_.close_sent || !down_.close_sent) return;
  if (close_code_ == kCloseTooBig || close_code_ == kCloseProtocolError) {
    finish();  // the sender's framing is lost: no answer can be read, only written out
    return;
  }
  if (down_.frames.closes() > up_.answer_mark && up_.frames.closes() > down_.answer_mark) {
    conn_.worker()->counters.tunnels_closed_cleanly.fetch_add(1, std::memory_order_relaxed);
    finish();
  }
}

void Tunnel::on_source_end(Direction& d, int status) {
  note_end(toward_backend(d) ? TunnelCloser::kClient : TunnelCloser::kBackend,
           status == UV_EOF ? TunnelCloseReason::kClosed : TunnelCloseReason::kError);
  if (status != UV_EOF) {
    conn_.close();
    return;
  }
  d.ended = true;
  d.relay.source_ended();
  if (other(d).ended) {
    finish();  // the close sends the FIN after the queued bytes: a half-close first is one more call
    return;
  }
  d.relay.sink()->shutdown_after_writes();  // the half-close travels on
}

void Tunnel::on_sink_writable(Direction& d) {
  if (finished_) {
    finish();
  } else {
    d.relay.update();
  }
}

// Both directions are done: close once our queued bytes (a Close frame, the last data) are
// written; the sinks' on_writable calls back here until they are.
void Tunnel::finish() {
  finished_ = true;
  if (upstream_ == nullptr || (conn_.tunnel_client()->pending() == 0 && upstream_->out().drained())) {
    conn_.close();
  }
}

}  // namespace limpet::proxy
