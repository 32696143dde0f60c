#include "limpet/proxy/http_session.hpp"

#include <algorithm>

#include "limpet/http/framing.hpp"
#include "limpet/proxy/client_connection.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {
namespace {

// Client bytes we keep while the current exchange runs (pipelined requests, early tunnel data)
// before we stop reading the client.
constexpr size_t kMaxPendingInput = 64 * 1024;
// After an error answer: how long we keep draining the client's input before closing, so that
// the client reads our answer instead of a reset.
constexpr uint64_t kLingerMs = 2000;

// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host header; 1.0 may omit it.
bool has_valid_host(const http::RequestHead& head) {
  int hosts = 0;
  for (const auto& h : head.headers) hosts += http::iequals(h.name, "host") ? 1 : 0;
  return hosts == 1 || (hosts == 0 && head.http_minor == 0);
}

http::BodyFraming response_framing(const http::RequestHead& request, const http::ResponseHead& resp) {
  if (request.method == "HEAD" || resp.status == 204 || resp.status == 304) return http::BodyFraming::kNone;
  if (resp.content_length) return http::BodyFraming::kLength;
  // No length from the backend: chunked for an HTTP/1.1 client, until-close for 1.0.
  return request.http_minor >= 1 ? http::BodyFraming::kChunked : http::BodyFraming::kUntilClose;
}

}  // namespace

HttpSession::HttpSession(ClientConnection& conn)
    : conn_(conn),
      parser_(http::Parser::Kind::kRequest,
              http::ParserLimits{conn.listener().config->max_header_size,
                                 conn.listener().config->max_request_line},
              this),
      client_in_(conn.client(), nullptr),
      exchange_(conn.worker(), &conn.listener(), this) {}

HttpSession::~HttpSession() = default;

// ---------------------------------------------------------------------------------------------
// Client events

void HttpSession::on_client_data(std::string_view data) {
  if (phase_ == Phase::kLingering) return;  // discarded
  if (parser_paused_ || !pending_in_.empty()) {
    pending_in_.append(data);
    update_hold();
    return;
  }
  parse(data);
}

void HttpSession::parse(std::string_view data) {
  auto outcome = parser_.execute(data);
  if (phase_ == Phase::kLingering || conn_.client()->closing()) return;  // answered from a callback
  switch (outcome.state) {
    case http::Parser::State::kNeedMore:
      break;
    case http::Parser::State::kPaused:
    case http::Parser::State::kUpgrade:
      on_parser_stopped(outcome.state, data.substr(outcome.consumed));
      break;
    case http::Parser::State::kError:
      LOG_INFO("bad request from %s: %s", conn_.client_ip().data(), parser_.error_reason().c_str());
      respond_error(parser_.error_status());
      return;
  }
  update_hold();
}

void HttpSession::on_parser_stopped(http::Parser::State state, std::string_view rest) {
  parser_paused_ = true;
  // An Upgrade we do not tunnel (not a valid WebSocket handshake) continues as plain HTTP.
  if (state == http::Parser::State::kUpgrade && request_ != nullptr && !request_->websocket) {
    parser_.resume_after_upgrade();
  }
  pending_in_.assign(rest);
}

void HttpSession::on_client_end(int status) {
  client_ended_ = true;
  client_in_.source_ended();
  if (phase_ == Phase::kLingering && status == UV_EOF) {
    // The answer may still be on its way out: close once it is (on_client_writable).
    if (conn_.client()->out().drained()) conn_.close();
    return;
  }
  if (phase_ == Phase::kExchange && exchange_.active()) {
    // A client that half-closes after its request still gets the answer with
    // ignore_client_abort; by default its EOF is an abort, as in nginx: a browser that gave up
    // on a long-poll closes its socket, and the backend connection must not wait for the answer.
    if (status == UV_EOF && exchange_.request_complete() && conn_.listener().config->ignore_client_abort) return;
    conn_.worker()->counters.client_aborts.fetch_add(1, std::memory_order_relaxed);
    log_access(response_started_ ? status_ : kClientClosedRequest);  // as nginx logs it
    exchange_.abort();
    conn_.close();
    return;
  }
  if (phase_ == Phase::kExchange && status == UV_EOF) {
    return;  // a half-closed client whose answer is on its way: next_request closes it
  }
  exchange_.abort();
  conn_.close();
}

void HttpSession::on_client_writable() {
  if (phase_ == Phase::kLingering) {
    if (client_ended_ && conn_.client()->out().drained()) conn_.close();
    return;
  }
  exchange_.on_client_writable();
}

void HttpSession::begin_shutdown() {
  if (phase_ == Phase::kReadingHead && !parser_.in_head() && pending_in_.empty()) {
    conn_.close();
  } else {
    close_after_response_ = true;
  }
}

// What stops reading the client: while a body flows, only the upstream's queue (the relay sees
// it); otherwise the input we hold for later, bounded.
void HttpSession::update_hold() {
  bool body_flowing = phase_ == Phase::kExchange && exchange_.active() && !exchange_.request_complete();
  client_in_.hold(!body_flowing && pending_in_.size() >= kMaxPendingInput);
}

// ---------------------------------------------------------------------------------------------
// Deadlines

DeadlineSpec HttpSession::deadline() const {
  const auto& l = *conn_.listener().config;
  switch (phase_) {
    case Phase::kLingering:
      // The linger starts once the answer is out; until then the client is reading it.
      if (!conn_.client()->out().drained()) return {Deadline::kClientSend, to_ms(l.send_timeout)};
      return {Deadline::kLinger, kLingerMs};
    case Phase::kExchange:
      if (exchange_.active()) return exchange_.deadline();
      [[fallthrough]];
    case Phase::kReadingHead:
      // A new connection has header_timeout for its first request; keep-alive is for the ones after.
      if (!served_one_ || parser_.in_head() || !pending_in_.empty()) {
        return {Deadline::kRequestHead, to_ms(l.header_timeout)};
      }
      return {Deadline::kKeepAlive, to_ms(l.keepalive_timeout)};
  }
  return {};
}

void HttpSession::on_deadline(Deadline kind) {
  switch (kind) {
    case Deadline::kRequestHead:
      respond_error(408);
      return;
    case Deadline::kClientBody:
      // The client's stall, not the backend's: answered here, never counted against it.
      LOG_INFO("client %s sent no more of its request body within body_timeout", conn_.client_ip().data());
      respond_error(408);
      return;
    case Deadline::kClientSend:
      LOG_INFO("client %s read none of the response within send_timeout", conn_.client_ip().data());
      exchange_.abort();
      conn_.close();
      return;
    case Deadline::kKeepAlive:
    case Deadline::kLinger:
      conn_.close();
      return;
    default:
      if (blames_backend(kind) && exchange_.active()) {
        exchange_.on_deadline(kind);
      } else {
        conn_.close();
      }
      return;
  }
}

// ---------------------------------------------------------------------------------------------
// Requests

bool HttpSession::on_head() {
  conn_.worker()->counters.requests.fetch_add(1, std::memory_order_relaxed);
  request_ = &parser_.request();
  request_started_ns_ = uv_hrtime();
  bytes_before_ = conn_.client()->out().bytes_sent();
  body_bytes_ = 0;
  response_started_ = false;
  head_pending_ = false;
  framing_ = http::BodyFraming::kNone;
  close_after_response_ = close_after_response_ || conn_.worker()->shutting_down || conn_.worker()->close_after_response;
  if (!has_valid_host(*request_)) {
    LOG_INFO("bad request from %s: HTTP/1.1 request without exactly one Host header",
             conn_.client_ip().data());
    respond_error(400);
    return false;
  }
  if (answer_readiness()) return false;
  size_t max_body = conn_.listener().config->max_body_size;
  if (max_body > 0 && request_->content_length && *request_->content_length > max_body) {
    respond_error(413);
    return false;
  }
  phase_ = Phase::kExchange;
  const bool send_proxy =
      conn_.listener().upstream->config().send_proxy_protocol != config::SendProxyProtocol::kOff;
  exchange_.start({request_, conn_.client_ip(), &client_in_, send_proxy ? &conn_.endpoints() : nullptr,
                   &conn_.backend_fd()});
  if (phase_ == Phase::kExchange) conn_.refresh_deadline(ClientConnection::Refresh::kRestart);
  return false;
}

bool HttpSession::on_body(std::string_view data) {
  if (phase_ != Phase::kExchange || !exchange_.active() || exchange_.request_complete()) return false;
  body_bytes_ += data.size();
  size_t max_body = conn_.listener().config->max_body_size;
  if (max_body > 0 && body_bytes_ > max_body) return false;  // the parser reports 413
  exchange_.send_body(data);
  return true;
}

void HttpSession::on_message_end() {
  if (phase_ != Phase::kExchange || !exchange_.active()) return;
  exchange_.end_body();
}

void HttpSession::next_request() {
  phase_ = Phase::kReadingHead;
  served_one_ = true;
  request_ = nullptr;
  // The last response is out: an error in the next head is answered, not just closed on.
  response_started_ = false;
  if (client_ended_ && pending_in_.empty()) {
    linger();  // closes once the last answer is written
    return;
  }
  if (parser_paused_) {
    parser_paused_ = false;
    parser_.resume();
  }
  conn_.refresh_deadline(ClientConnection::Refresh::kRestart);
  if (pending_in_.empty()) {
    update_hold();
    return;
  }
  std::string input;
  input.swap(pending_in_);
  parse(input);
  conn_.refresh_deadline(ClientConnection::Refresh::kIfChanged);
}

// ---------------------------------------------------------------------------------------------
// Responses (ExchangeOwner)

net::ByteStream* HttpSession::response_sink() { return conn_.client(); }

void HttpSession::on_exchange_progress(bool activity) {
  conn_.refresh_deadline(activity ? ClientConnection::Refresh::kActivity : ClientConnection::Refresh::kIfChanged);
}

void HttpSession::on_interim_response(const http::ResponseHead& head) {
  http::build_response_head(head, {}, &response_head_);
  conn_.client()->write(response_head_);
}

void HttpSession::on_response_head(const http::ResponseHead& resp, std::string_view set_cookie) {
  http::ResponseHeadOptions options;
  options.set_cookie = set_cookie;
  if (resp.status == 101) {
    options.upgrade = true;
  } else {
    framing_ = response_framing(*request_, resp);
    // An upgrade the backend refused leaves the connection in HTTP: what follows is parsed and
    // checked as the next request, never passed on as tunnel bytes.
    close_after_response_ = close_after_response_ || !request_->keep_alive || !exchange_.request_complete() ||
                            framing_ == http::BodyFraming::kUntilClose;
    options.framing = framing_;
    options.close = close_after_response_;
  }
  http::build_response_head(resp, options, &response_head_);
  head_pending_ = true;
  response_started_ = true;
  status_ = resp.status;
  count_response(resp.status);
  if (resp.status == 101) write_response({});  // tunnel bytes follow it at once
}

void HttpSession::on_response_body(std::string_view data) {
  http::FramedBody framed(framing_, data, head_pending_ ? std::string_view(response_head_) : std::string_view());
  head_pending_ = false;
  conn_.client()->write(framed.parts());
}

void HttpSession::flush_response() {
  if (head_pending_) write_response({});
}

// The response head if it still waits, then `tail`, in one write.
void HttpSession::write_response(std::string_view tail) {
  std::string_view parts[] = {head_pending_ ? std::string_view(response_head_) : std::string_view(), tail};
  head_pending_ = false;
  conn_.client()->write(parts);
}

void HttpSession::on_response_end() {
  write_response(framing_ == http::BodyFraming::kChunked ? http::kLastChunk : std::string_view());
  conn_.worker()->counters.request_latency.observe_us((uv_hrtime() - request_started_ns_) / 1000);
  log_access(status_);
  if (close_after_response_ || conn_.worker()->shutting_down) {
    if (client_sends_nothing_more()) {
      conn_.close();  // the answer is in the kernel's hands: it goes out before our FIN
      return;
    }
    linger();
    return;
  }
  next_request();
}

void HttpSession::on_exchange_failed(int status) {
  if (!response_started_) {
    respond_error(status);
    return;
  }
  // The client has part of a response: only closing tells it.
  flush_response();
  log_access(status_);
  conn_.close();
}

void HttpSession::on_upgraded(UpgradeHandoff handoff) {
  log_access(101);
  std::string early_client_bytes;
  early_client_bytes.swap(pending_in_);
  // This session is retired here (freed at the end of the loop turn): nothing after this line.
  conn_.become_tunnel(std::move(handoff), std::move(early_client_bytes));
}

// ---------------------------------------------------------------------------------------------
// Ending

// The listener's ready_path is limpet's own (never proxied): 503 as soon as this process stops
// taking new work (shutdown, or the old process of a binary upgrade), so whatever balances in
// front takes it out before its connections close. Both answers close, as probes reconnect.
bool HttpSession::answer_readiness() {
  const std::string& ready_path = conn_.listener().config->ready_path;
  if (ready_path.empty() || request_->path != ready_path) return false;
  const WorkerContext& worker = *conn_.worker();
  respond_error(worker.shutting_down || worker.close_after_response ? 503 : 200);
  return true;
}

void HttpSession::respond_error(int status) {
  exchange_.abort();
  if (response_started_ || phase_ == Phase::kLingering) {
    conn_.close();
    return;
  }
  count_response(status);
  conn_.client()->write(http::simple_response(status, true));
  if (request_ != nullptr) log_access(status);
  linger();
}

// Lingering close: stop sending after the queued bytes, keep draining (and discarding) input
// for a moment so the peer reads our answer rather than a reset.
void HttpSession::linger() {
  phase_ = Phase::kLingering;
  net::Stream* client = conn_.client();
  client->shutdown_after_writes();
  if (client_ended_ && client->out().drained()) {
    conn_.close();
    return;
  }
  client_in_.set_sink(nullptr);
  client_in_.hold(false);
  // The exchange's deadline is over: from here the answer's delivery, then the linger, count.
  conn_.refresh_deadline(ClientConnection::Refresh::kRestart);
}

// The linger keeps reading so that late client bytes cannot turn our close into a reset that
// destroys the answer on its way. A plain-TCP client that asked for the close, whose request we
// read to its end, with nothing of it left unparsed and the answer all in the kernel, sends
// nothing more: it is closed at once, as nginx does. That saves the shutdown, two epoll changes,
// a loop turn and the read of its FIN for every such request: Engine.IO's polling requests all
// say "Connection: close" (node-XMLHttpRequest), 4 or 5 per Socket.IO session.
bool HttpSession::client_sends_nothing_more() const {
  net::Stream* client = conn_.client();
  return request_ != nullptr && !request_->keep_alive && exchange_.request_complete() && pending_in_.empty() &&
         !parser_.in_head() && !client->filtered() && client->out().drained();
}

void HttpSession::count_response(int status) {
  conn_.worker()->counters.responses_by_class[std::clamp(status / 100, 0, 5)].fetch_add(
      1, std::memory_order_relaxed);
}

void HttpSession::log_access(int status) {
  const uint64_t now = uv_hrtime();
  AccessEntry entry;
  entry.client_ip = conn_.client_ip();
  entry.request = request_;
  entry.status = status;
  entry.bytes = conn_.client()->out().bytes_sent() - bytes_before_;
  entry.duration_ns = now - request_started_ns_;
  entry.upstream_time_ns = exchange_.upstream_time_ns(now);
  entry.upstream = conn_.listener().upstream->config().name;
  entry.backend = exchange_.backend_name();
  entry.reason = exchange_.route_reason();
  conn_.worker()->access_log.write(entry);
}

}  // namespace limpet::proxy
