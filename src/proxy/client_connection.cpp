#include "limpet/proxy/client_connection.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>

#include "limpet/net/socket.hpp"
#include "limpet/proxy/socketio.hpp"
#include "limpet/proxy/websocket.hpp"
#include "limpet/util/json.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {
namespace {

// Client bytes we keep while the current exchange runs (pipelined requests, early tunnel data)
// before we stop reading the client.
constexpr size_t kMaxPendingInput = 64 * 1024;
// An Engine.IO handshake body is ~150 bytes; past this we stop looking for the sid.
constexpr size_t kMaxHandshakeCapture = 4096;
// After an error response: how long we keep draining the client's input before closing, so that
// the client reads our answer instead of a reset.
constexpr uint64_t kLingerMs = 2000;
// How long a tunnel waits for both sides to answer an injected Close frame.
constexpr uint64_t kCloseReplyMs = 3000;
constexpr uint16_t kCloseGoingAway = 1001;
constexpr uint16_t kCloseServiceRestart = 1012;

uint64_t ms(config::Millis d) { return static_cast<uint64_t>(d.count()); }

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host header; 1.0 may omit it.
bool has_valid_host(const http::RequestHead& head) {
  int hosts = 0;
  for (const auto& h : head.headers) hosts += http::iequals(h.name, "host") ? 1 : 0;
  return hosts == 1 || (hosts == 0 && head.http_minor == 0);
}

}  // namespace

struct ClientConnection::TunnelState {
  websocket::FrameTracker to_backend;
  websocket::FrameTracker to_client;
  uint64_t backend_closes_mark = 0;  // to_client.closes() when we sent the backend its Close
  uint64_t client_closes_mark = 0;   // to_backend.closes() when we sent the client its Close
  uint64_t close_deadline = 0;  // loop time (ms) of the next clean-close step; 0: none
  uint16_t close_code = 0;  // a clean close was requested
  bool tracking = true;  // false once the bytes stopped looking like WebSocket frames
  bool close_started = false;  // its delay has passed
  bool close_sent_to_backend = false;
  bool close_sent_to_client = false;
  bool finished = false;  // both directions done: close once the queues are written
};

void ClientConnection::start(WorkerContext* worker, std::shared_ptr<const ListenerContext> listener,
                             net::Stream* client) {
  auto* conn = new ClientConnection(worker, std::move(listener), client);
  worker->connections.insert(conn);
  client->set_delegate(conn);
  client->accepted();
  client->set_nodelay();
  client->set_timeout(ms(conn->lconf().header_timeout));
  client->start_reading();
}

ClientConnection::ClientConnection(WorkerContext* worker,
                                   std::shared_ptr<const ListenerContext> listener,
                                   net::Stream* client)
    : worker_(worker),
      listener_(std::move(listener)),
      client_(client),
      client_ip_(net::peer_ip(client->tcp())),
      request_parser_(std::make_unique<http::Parser>(
          http::Parser::Kind::kRequest,
          http::ParserLimits{listener_->config->max_header_size, listener_->config->max_request_line},
          &request_side_)) {
  request_side_.self = this;
  response_side_.self = this;
  ++*listener_->open_connections;
  worker_->counters.active_connections.fetch_add(1, std::memory_order_relaxed);
}

ClientConnection::~ClientConnection() {
  worker_->counters.bytes_from_clients.fetch_add(client_->bytes_read(), std::memory_order_relaxed);
  worker_->counters.bytes_to_clients.fetch_add(client_->out().bytes_sent(), std::memory_order_relaxed);
  --*listener_->open_connections;
  worker_->counters.active_connections.fetch_sub(1, std::memory_order_relaxed);
  worker_->connections.erase(this);
}

void ClientConnection::begin_shutdown() {
  if (state_ == State::kReadingHead && !request_parser_->in_head() && pending_in_.empty()) {
    close_all();
  } else if (state_ == State::kTunnel) {
    uint64_t spread = worker_->close_spread_ms;
    close_tunnel_cleanly(kCloseGoingAway, spread > 0 ? worker_->rng() % spread : 0);
  } else {
    close_after_response_ = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Stream events

void ClientConnection::on_data(net::Stream* s, std::string_view data) {
  if (state_ == State::kTunnel) {
    tunnel_data(s, data);
  } else if (s == client_) {
    on_client_data(data);
  } else {
    on_upstream_data(data);
  }
}

void ClientConnection::on_end(net::Stream* s, int status) {
  if (state_ == State::kTunnel) {
    tunnel_end(s, status);
    return;
  }
  if (s == upstream_) {
    on_upstream_end(status);
    return;
  }
  client_ended_ = true;
  if (state_ == State::kExchange && request_done_ && status == UV_EOF) {
    close_after_response_ = true;  // half-closed client: answer, then close
    return;
  }
  close_all();
}

void ClientConnection::on_writable(net::Stream* s) {
  switch (state_) {
    case State::kTunnel: {
      if (tunnel_->finished) {
        close_after_tunnel_writes();
        break;
      }
      net::Stream* other = s == client_ ? upstream_ : client_;
      bool other_ended = other == client_ ? client_ended_ : upstream_ended_;
      if (!other_ended) other->start_reading();
      break;
    }
    case State::kExchange:
      if (s == upstream_) {
        update_client_reading();
      } else if (upstream_ && !upstream_->out().above_high_water()) {
        upstream_->start_reading();
      }
      break;
    case State::kReadingHead:
    case State::kClosing:
      break;
  }
}

void ClientConnection::on_closed(net::Stream* s) {
  if (s == client_) delete this;
}

// One timer per connection, the client stream's: the upstream stream carries none (an idle tunnel
// holds one timer, not two). What it means depends on the state: header or keep-alive timeout,
// the exchange's connect/send/read timeout, the tunnel's idle timeout or clean-close deadline.
void ClientConnection::on_timeout(net::Stream* s) {
  if (s != client_) return;
  if (state_ == State::kTunnel && tunnel_->close_deadline != 0 &&
      uv_now(worker_->loop) >= tunnel_->close_deadline) {
    tunnel_->close_deadline = 0;
    tunnel_timer();
    return;
  }
  if (state_ == State::kExchange) {
    if (!upstream_connected_) {
      LOG_WARN("connect to backend %s timed out", upstream().backends()[backend_].config->name.c_str());
      on_connected(UV_ETIMEDOUT);
    } else if (!response_started_) {
      LOG_WARN("backend %s: no response within read_timeout",
               upstream().backends()[backend_].config->name.c_str());
      upstream().report_failure(backend_, "no response within read_timeout");
      upstream_failed(504, "read timeout");
    } else {
      close_all();
    }
    return;
  }
  switch (state_) {
    case State::kReadingHead:
      if (request_parser_->in_head() || !pending_in_.empty()) {
        respond_error(408);
      } else {
        close_all();  // idle keep-alive connection
      }
      break;
    case State::kTunnel:
      LOG_DEBUG("tunnel idle timeout from %s", client_ip_.c_str());
      close_all();
      break;
    case State::kExchange:  // handled above
    case State::kClosing:   // lingering after an error
      close_all();
      break;
  }
}

// ---------------------------------------------------------------------------------------------
// Client side: requests

void ClientConnection::on_client_data(std::string_view data) {
  if (state_ == State::kClosing) return;  // lingering: discard
  if (request_paused_ || !pending_in_.empty()) {
    pending_in_.append(data);
    update_client_reading();
    return;
  }
  auto outcome = request_parser_->execute(data);
  if (state_ == State::kClosing) return;
  switch (outcome.state) {
    case http::Parser::State::kNeedMore:
      break;
    case http::Parser::State::kPaused:
    case http::Parser::State::kUpgrade:
      on_request_paused(outcome.state);
      pending_in_.assign(data.substr(outcome.consumed));
      break;
    case http::Parser::State::kError:
      on_request_error();
      return;
  }
  update_client_reading();
}

// Parses what waited in pending_in_ once the previous exchange is over.
void ClientConnection::parse_pending_input() {
  std::string input;
  input.swap(pending_in_);
  on_client_data(input);
}

void ClientConnection::on_request_paused(http::Parser::State state) {
  request_paused_ = true;
  // An Upgrade we do not tunnel (not a valid WebSocket handshake) continues as plain HTTP.
  if (state == http::Parser::State::kUpgrade && request_ && !request_->websocket) {
    request_parser_->resume_after_upgrade();
  }
}

void ClientConnection::on_request_error() {
  LOG_INFO("bad request from %s: %s", client_ip_.c_str(), request_parser_->error_reason().c_str());
  if (state_ == State::kExchange && response_started_) {
    close_all();
  } else {
    respond_error(request_parser_->error_status());
  }
}

bool ClientConnection::on_request_head() {
  worker_->counters.requests.fetch_add(1, std::memory_order_relaxed);
  client_->clear_timeout();
  request_ = &request_parser_->request();
  request_started_ns_ = uv_hrtime();
  connect_started_ns_ = 0;
  response_bytes_before_ = client_->out().bytes_sent();
  request_done_ = false;
  request_body_bytes_ = 0;
  if (!has_valid_host(*request_)) {
    LOG_INFO("bad request from %s: HTTP/1.1 request without exactly one Host header",
             client_ip_.c_str());
    respond_error(400);
    return false;
  }
  size_t max_body = lconf().max_body_size;
  if (max_body > 0 && request_->content_length && *request_->content_length > max_body) {
    respond_error(413);
    return false;
  }
  start_exchange();
  return false;
}

bool ClientConnection::on_request_body(std::string_view data) {
  if (state_ != State::kExchange) return false;
  request_body_bytes_ += data.size();
  size_t max_body = lconf().max_body_size;
  if (max_body > 0 && request_body_bytes_ > max_body) return false;  // parser reports 413
  write_body(upstream_, request_->chunked ? http::BodyFraming::kChunked : http::BodyFraming::kLength,
             data);
  if (upstream_connected_) client_->set_timeout(ms(upstream().config().send_timeout));
  return true;
}

void ClientConnection::on_request_end() {
  if (state_ != State::kExchange) return;
  request_done_ = true;
  if (request_->chunked) upstream_->write("0\r\n\r\n");
  if (upstream_connected_) client_->set_timeout(ms(upstream().config().read_timeout));
}

void ClientConnection::update_client_reading() {
  bool want = false;
  switch (state_) {
    case State::kReadingHead:
      want = pending_in_.size() < kMaxPendingInput;
      break;
    case State::kExchange:
      if (!request_done_) {
        want = !upstream_ || !upstream_->out().above_high_water();
      } else {
        want = pending_in_.size() < kMaxPendingInput;  // pipelined input, bounded
      }
      break;
    case State::kTunnel:
    case State::kClosing:
      return;
  }
  if (client_ended_) want = false;
  if (want) {
    client_->start_reading();
  } else {
    client_->stop_reading();
  }
}

void ClientConnection::next_request() {
  state_ = State::kReadingHead;
  request_ = nullptr;
  route_ = {};
  backend_ = -1;
  if (client_ended_) {
    close_all();
    return;
  }
  client_->set_timeout(pending_in_.empty() ? ms(lconf().keepalive_timeout)
                                           : ms(lconf().header_timeout));
  if (request_paused_) {
    request_paused_ = false;
    request_parser_->resume();
  }
  if (!pending_in_.empty()) {
    client_->set_timeout(ms(lconf().header_timeout));
    parse_pending_input();
  } else {
    update_client_reading();
  }
}

// ---------------------------------------------------------------------------------------------
// Upstream side: the exchange

void ClientConnection::start_exchange() {
  state_ = State::kExchange;
  tried_.clear();
  response_started_ = false;
  response_head_seen_ = false;
  interim_response_ = false;
  response_framing_ = http::BodyFraming::kNone;
  close_after_response_ = worker_->shutting_down;
  handshake_body_.clear();
  handshake_learning_ = false;
  route_ = upstream().route({*request_, client_ip_, tried_, worker_->rng()});
  if (route_.backend < 0) {
    LOG_WARN("upstream %s: no usable backend for %s %.*s", upstream().config().name.c_str(),
             client_ip_.c_str(), static_cast<int>(request_->path.size()), request_->path.data());
    respond_error(503);
    return;
  }
  http::build_request_head(*request_, {client_ip_, listener_->tls != nullptr, lconf().add_forwarded},
                           &request_head_out_);
  connect_upstream(route_.backend, {});
}

void ClientConnection::connect_upstream(int backend, std::vector<std::string> payload) {
  const auto& b = upstream().backends()[static_cast<size_t>(backend)];
  backend_ = backend;
  tried_.push_back(backend);
  b.state->in_flight.fetch_add(1, std::memory_order_relaxed);
  b.state->requests.fetch_add(1, std::memory_order_relaxed);
  LOG_DEBUG("%s %.*s %.*s -> %s (%s)", client_ip_.c_str(), static_cast<int>(request_->method.size()),
            request_->method.data(), static_cast<int>(request_->target.size()),
            request_->target.data(), b.config->name.c_str(), balancer::to_string(route_.reason));

  // Built in place: the key keeps its buffer from one request to the next.
  char id[16];
  auto [id_end, ec] = std::to_chars(id, id + sizeof id, b.state->id);
  (void)ec;
  upstream_key_.assign(id, id_end);
  upstream_key_ += '|';
  upstream_key_ += b.config->address.text;
  if (listener_->upstream_tls != nullptr) upstream_key_ += "|tls";  // never reuse across a TLS switch
  if (response_parser_) {
    response_parser_->reset();
  } else {
    response_parser_ = std::make_unique<http::Parser>(
        http::Parser::Kind::kResponse, http::ParserLimits{64 * 1024, 8 * 1024}, &response_side_);
  }
  response_parser_->expect_no_body_response(request_->method == "HEAD");

  if (net::Stream* pooled = worker_->pool.take(upstream_key_)) {
    upstream_ = pooled;
    upstream_->set_delegate(this);
    upstream_reused_ = true;
    upstream_connected_ = true;
    write_payload(payload);
    client_->set_timeout(ms(upstream().config().read_timeout));
    upstream_->start_reading();
    update_client_reading();  // a retry may have stopped the client; the kernel took it all
    return;
  }
  upstream_ = new net::Stream(worker_->loop, &worker_->buffers);
  if (const tls::ClientContext* tls = listener_->upstream_tls) {
    upstream_->set_filter(tls->new_filter(*b.config, &worker_->counters.tls_backends));
  }
  upstream_->set_delegate(this);
  upstream_reused_ = false;
  upstream_connected_ = false;
  connect_started_ns_ = uv_hrtime();
  write_payload(payload);
  client_->set_timeout(ms(upstream().config().connect_timeout));
  int rc = upstream_->connect(reinterpret_cast<const sockaddr*>(&b.addr),
                              [this](int status) { on_connected(status); });
  if (rc != 0) on_connected(rc);
}

void ClientConnection::on_connected(int status) {
  if (status == 0) {
    worker_->counters.connect_latency.observe_us((uv_hrtime() - connect_started_ns_) / 1000);
    upstream_connected_ = true;
    upstream_->set_nodelay();
    upstream_->start_reading();
    client_->set_timeout(ms(request_done_ ? upstream().config().read_timeout
                                            : upstream().config().send_timeout));
    update_client_reading();
    return;
  }
  const auto& b = upstream().backends()[static_cast<size_t>(backend_)];
  LOG_WARN("connect to backend %s (%s) failed: %s", b.config->name.c_str(),
           b.config->address.text.c_str(), uv_strerror(status));
  upstream().report_failure(backend_, status == UV_ETIMEDOUT ? "connect timed out" : "connect failed");
  // Nothing reached the backend: the queued head (and body so far) can go elsewhere.
  retry_elsewhere(502);
}

bool ClientConnection::may_retry() const {
  return route_.session_id.empty() && tried_.size() < upstream().config().max_tries;
}

void ClientConnection::retry_elsewhere(int status_if_not) {
  if (!may_retry()) {
    upstream_failed(status_if_not, "connect failed");
    return;
  }
  auto queued = upstream_->out().take_queued();
  drop_upstream();
  balancer::Route again = upstream().route({*request_, client_ip_, tried_, worker_->rng()});
  if (again.backend < 0) {
    upstream_failed(status_if_not, "no other backend");
    return;
  }
  worker_->counters.retries.fetch_add(1, std::memory_order_relaxed);
  again.session_id = route_.session_id;
  route_ = again;
  connect_upstream(route_.backend, std::move(queued));
}

// The request head, or on a retry everything the failed attempt had queued (head included).
void ClientConnection::write_payload(const std::vector<std::string>& payload) {
  if (payload.empty()) {
    upstream_->write(request_head_out_);
    return;
  }
  for (const auto& chunk : payload) upstream_->write(chunk);
}

void ClientConnection::on_upstream_data(std::string_view data) {
  if (state_ != State::kExchange || !response_parser_) return;
  client_->set_timeout(ms(upstream().config().read_timeout));
  std::string_view rest = data;
  for (;;) {
    auto outcome = response_parser_->execute(rest);
    if (state_ != State::kExchange) return;  // an error answer was sent from a callback
    switch (outcome.state) {
      case http::Parser::State::kNeedMore:
        flush_response_head();  // the body comes with a later read
        return;
      case http::Parser::State::kPaused:
        rest.remove_prefix(outcome.consumed);
        if (interim_response_) {  // 100 Continue and friends: the real response follows
          interim_response_ = false;
          response_parser_->resume();
          if (rest.empty()) return;
          continue;
        }
        // Bytes after a complete response mean the connection is not reusable.
        complete_exchange(rest.empty());
        return;
      case http::Parser::State::kUpgrade:
        rest.remove_prefix(outcome.consumed);
        if (request_->websocket && response_parser_->response().status == 101) {
          start_tunnel(rest);
        } else {
          upstream_failed(502, "unexpected upgrade");
        }
        return;
      case http::Parser::State::kError:
        LOG_WARN("backend %s sent an invalid response: %s",
                 upstream().backends()[backend_].config->name.c_str(),
                 response_parser_->error_reason().c_str());
        upstream_failed(502, "invalid response");
        return;
    }
  }
}

void ClientConnection::on_upstream_end(int status) {
  upstream_ended_ = true;
  if (state_ != State::kExchange) return;
  if (response_head_seen_ && response_parser_->needs_eof()) {
    auto outcome = response_parser_->finish();  // until-close body ends here
    if (outcome.state != http::Parser::State::kError) {
      complete_exchange(false);
      return;
    }
  }
  if (!response_started_ && upstream_reused_ && route_.session_id.empty() &&
      is_idempotent(request_->method) && request_->content_length.value_or(0) == 0 &&
      !request_->chunked) {
    // A pooled connection the backend had already closed: not the backend's fault, and the
    // request carried no session and no body, so sending it again duplicates nothing.
    LOG_DEBUG("stale pooled connection to %s, reconnecting",
              upstream().backends()[backend_].config->name.c_str());
    drop_upstream();
    tried_.pop_back();
    connect_upstream(route_.backend, {});
    return;
  }
  if (!response_started_ && upstream_->out().bytes_sent() == 0) {
    retry_elsewhere(502);
    return;
  }
  LOG_WARN("backend %s closed the connection mid-%s: %s",
           upstream().backends()[backend_].config->name.c_str(),
           response_started_ ? "response" : "request", uv_strerror(status));
  upstream_failed(502, "backend closed");
}

void ClientConnection::upstream_failed(int status_to_client, const char* why) {
  LOG_DEBUG("exchange with %s failed (%s): answering %d",
            backend_ >= 0 ? upstream().backends()[backend_].config->name.c_str() : "-", why,
            status_to_client);
  if (response_started_) {
    flush_response_head();
    close_all();  // the client has part of a response: only closing tells it
  } else {
    if (backend_ >= 0) upstream().backends()[static_cast<size_t>(backend_)].state->count_response(status_to_client);
    respond_error(status_to_client);
  }
}

bool ClientConnection::on_response_head() {
  const http::ResponseHead& resp = response_parser_->response();
  if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
    interim_response_ = true;
    http::build_response_head(resp, {}, &response_head_out_);
    client_->write(response_head_out_);
    return false;
  }
  response_head_seen_ = true;
  http::ResponseHeadOptions options;
  if (resp.status == 101) {
    if (!request_->websocket) return false;  // refused in on_upstream_data
    options.upgrade = true;
  } else {
    bool no_body = request_->method == "HEAD" || resp.status == 204 || resp.status == 304;
    if (no_body) {
      response_framing_ = http::BodyFraming::kNone;
    } else if (resp.content_length) {
      response_framing_ = http::BodyFraming::kLength;
    } else if (request_->http_minor >= 1) {
      response_framing_ = http::BodyFraming::kChunked;
    } else {
      response_framing_ = http::BodyFraming::kUntilClose;
    }
    close_after_response_ = close_after_response_ || !request_->keep_alive || !request_done_ ||
                            request_->upgrade || response_framing_ == http::BodyFraming::kUntilClose;
    options.framing = response_framing_;
    options.close = close_after_response_;
  }
  std::string cookie;
  if (route_.set_cookie) {
    cookie = upstream().sticky_cookie_value(backend_);
    options.set_cookie = cookie;
  }
  if (route_.handshake) {
    for (const auto& h : resp.headers) {
      if (!http::iequals(h.name, "set-cookie")) continue;
      if (auto sid = socketio::sid_from_set_cookie(h.value)) upstream().learn_session(*sid, backend_);
    }
    handshake_learning_ = resp.status == 200;
    handshake_encoded_ = resp.header("content-encoding").has_value();
  }
  http::build_response_head(resp, options, &response_head_out_);
  response_head_pending_ = true;
  if (resp.status == 101) flush_response_head();  // tunnel bytes follow it at once
  response_started_ = true;
  upstream().backends()[static_cast<size_t>(backend_)].state->count_response(resp.status);
  worker_->counters.responses_by_class[std::min(resp.status / 100, 5)].fetch_add(
      1, std::memory_order_relaxed);
  return false;
}

bool ClientConnection::on_response_body(std::string_view data) {
  if (handshake_learning_) {
    size_t room = kMaxHandshakeCapture - handshake_body_.size();
    handshake_body_.append(data.substr(0, room));
    learn_session_from_body(false);
  }
  write_body(client_, response_framing_, data, pending_response_head());
  response_head_pending_ = false;
  if (client_->out().above_high_water()) upstream_->stop_reading();
  return true;
}

void ClientConnection::on_response_end() {
  if (interim_response_) return;
  flush_response_head(response_framing_ == http::BodyFraming::kChunked ? "0\r\n\r\n" : "");
  if (handshake_learning_) learn_session_from_body(true);
}

// The response head if it still waits, then `tail`, in one write.
void ClientConnection::flush_response_head(std::string_view tail) {
  std::string_view parts[] = {pending_response_head(), tail};
  response_head_pending_ = false;
  client_->write(parts);
}

void ClientConnection::learn_session_from_body(bool final) {
  if (handshake_encoded_) {
    upstream().note_unparsable_handshake();
    handshake_learning_ = false;
    return;
  }
  auto parsed = socketio::parse_handshake(handshake_body_);
  switch (parsed.status) {
    case socketio::HandshakeStatus::kFound:
      upstream().learn_session(parsed.sid, backend_);
      handshake_learning_ = false;
      break;
    case socketio::HandshakeStatus::kNeedMore:
      if (!final && handshake_body_.size() < kMaxHandshakeCapture) break;
      [[fallthrough]];
    case socketio::HandshakeStatus::kInvalid:
      upstream().note_unparsable_handshake();
      handshake_learning_ = false;
      break;
  }
}

void ClientConnection::complete_exchange(bool upstream_clean) {
  worker_->counters.request_latency.observe_us((uv_hrtime() - request_started_ns_) / 1000);
  log_access(response_parser_->response().status);
  const auto& b = upstream().backends()[static_cast<size_t>(backend_)];
  b.state->in_flight.fetch_sub(1, std::memory_order_relaxed);
  backend_ = -1;  // accounted for: drop_upstream must not count it again
  bool reusable = upstream_clean && !upstream_ended_ && request_done_ && !worker_->shutting_down &&
                  response_parser_->response().keep_alive;
  if (reusable) {
    // It keeps reading: the pool watches it for a close, and stopping and restarting the read
    // would cost two epoll_ctl calls per request.
    worker_->pool.give(upstream_key_, upstream_, upstream().config().keepalive_max_idle,
                       ms(upstream().config().keepalive_idle_timeout));
    upstream_ = nullptr;
  } else {
    drop_upstream();
  }
  if (close_after_response_ || worker_->shutting_down) {
    close_after_flush();
    return;
  }
  next_request();
}

// Closes the current upstream stream without waiting for it: it frees itself.
void ClientConnection::drop_upstream() {
  if (upstream_ == nullptr) return;
  if (backend_ >= 0 && state_ == State::kExchange) {
    upstream().backends()[static_cast<size_t>(backend_)].state->in_flight.fetch_sub(
        1, std::memory_order_relaxed);
  }
  upstream_->set_delegate(nullptr);
  upstream_->close();
  upstream_ = nullptr;
  upstream_connected_ = false;
  upstream_ended_ = false;
}

// One line per request: who, what, the answer, and which backend was chosen and why — so a user
// can answer "why did this client land there".
void ClientConnection::log_access(int status) {
  if (!log::access_enabled()) return;
  char when[40];
  log::format_time(when, sizeof when);
  uint64_t now = uv_hrtime();
  double duration = static_cast<double>(now - request_started_ns_) / 1e9;
  double upstream_time =
      connect_started_ns_ ? static_cast<double>(now - connect_started_ns_) / 1e9 : 0.0;
  uint64_t bytes = client_->out().bytes_sent() - response_bytes_before_;
  const char* backend = backend_ >= 0 ? upstream().backends()[backend_].config->name.c_str() : "-";
  const char* reason = backend_ >= 0 ? balancer::to_string(route_.reason) : "-";
  std::string line;
  char tail[256];
  if (worker_->access_log_json) {
    line = std::string("{\"time\":\"") + when + "\",\"client\":\"" + client_ip_ + "\",\"method\":\"" +
           json_escape(request_->method) + "\",\"target\":\"" + json_escape(request_->target) + "\"";
    std::snprintf(tail, sizeof tail,
                  ",\"status\":%d,\"bytes\":%llu,\"duration\":%.6f,\"upstream\":\"%s\","
                  "\"backend\":\"%s\",\"reason\":\"%s\",\"upstream_time\":%.6f}\n",
                  status, static_cast<unsigned long long>(bytes), duration,
                  upstream().config().name.c_str(), backend, reason, upstream_time);
  } else {
    line = client_ip_ + " [" + when + "] \"" + std::string(request_->method) + " " +
           std::string(request_->target) + " HTTP/" + std::to_string(request_->http_major) + "." +
           std::to_string(request_->http_minor) + "\"";
    std::snprintf(tail, sizeof tail, " %d %llu %.6f upstream=%s backend=%s reason=%s upstream_time=%.6f\n",
                  status, static_cast<unsigned long long>(bytes), duration,
                  upstream().config().name.c_str(), backend, reason, upstream_time);
  }
  line += tail;
  log::access(line);
}

void ClientConnection::write_body(net::Stream* to, http::BodyFraming framing, std::string_view data,
                                  std::string_view head) {
  if (framing != http::BodyFraming::kChunked) {
    std::string_view parts[] = {head, data};
    to->write(parts);
    return;
  }
  char size_line[24];
  auto [end, ec] = std::to_chars(size_line, size_line + sizeof size_line - 2, data.size(), 16);
  (void)ec;
  *end++ = '\r';
  *end++ = '\n';
  std::string_view parts[] = {head, std::string_view(size_line, static_cast<size_t>(end - size_line)),
                              data, "\r\n"};
  to->write(parts);
}

// ---------------------------------------------------------------------------------------------
// Tunnel


void ClientConnection::start_tunnel(std::string_view upstream_leftover) {
  log_access(101);
  state_ = State::kTunnel;
  const auto& b = upstream().backends()[static_cast<size_t>(backend_)];
  b.state->tunnels.fetch_add(1, std::memory_order_relaxed);
  worker_->counters.tunnels_opened.fetch_add(1, std::memory_order_relaxed);
  release_http_state();
  tunnel_ = std::make_unique<TunnelState>();
  arm_tunnel_timer();
  // Bytes that came with either head belong to the tunnel and go first.
  std::string early_client_bytes;
  early_client_bytes.swap(pending_in_);
  if (!upstream_leftover.empty()) tunnel_data(upstream_, upstream_leftover);
  if (!early_client_bytes.empty()) tunnel_data(client_, early_client_bytes);
  if (state_ != State::kTunnel) return;
  client_->start_reading();
  upstream_->start_reading();
  if (worker_->shutting_down) begin_shutdown();
}

// A tunnel speaks no more HTTP: what only requests needed goes, so that an idle tunnel holds as
// little as possible (design §6).
void ClientConnection::release_http_state() {
  request_ = nullptr;
  request_parser_.reset();
  response_parser_.reset();
  std::string().swap(request_head_out_);
  std::string().swap(response_head_out_);
  std::string().swap(upstream_key_);
  std::string().swap(handshake_body_);
  std::vector<int>().swap(tried_);
}

void ClientConnection::tunnel_data(net::Stream* from, std::string_view data) {
  const bool upward = from == client_;
  net::Stream* to = upward ? upstream_ : client_;
  arm_tunnel_timer();
  TunnelState& t = *tunnel_;
  if (t.tracking) {
    auto& tracker = upward ? t.to_backend : t.to_client;
    uint64_t before = tracker.messages();
    size_t boundary = tracker.feed(data);
    (upward ? worker_->counters.ws_messages_to_backend : worker_->counters.ws_messages_to_client)
        .fetch_add(tracker.messages() - before, std::memory_order_relaxed);
    if (tracker.error() != websocket::FrameTracker::Error::kNone) {
      LOG_DEBUG("tunnel from %s: not WebSocket framing, passing bytes through", client_ip_.c_str());
      t.tracking = false;
      if (t.close_code != 0) {
        close_all();
        return;
      }
    } else if (upward ? t.close_sent_to_backend : t.close_sent_to_client) {
      // That side already got our Close: nothing more may follow it; watch for the answers.
      finish_clean_close_if_answered();
      return;
    } else if (t.close_started && boundary > 0) {
      // Up to the last frame that ends in this chunk, then our Close; what follows is dropped
      // (nothing may follow a Close). No boundary yet: the frame in progress goes on whole.
      to->write(data.substr(0, boundary));
      inject_close(upward);
      return;
    }
  }
  to->write(data);
  if (to->out().above_high_water()) from->stop_reading();
}

void ClientConnection::close_tunnel_cleanly(uint16_t code, uint64_t delay_ms) {
  if (state_ != State::kTunnel || tunnel_->close_code != 0) return;
  if (!tunnel_->tracking) {
    close_all();
    return;
  }
  tunnel_->close_code = code;
  set_tunnel_close_deadline(delay_ms);
}

void ClientConnection::set_tunnel_close_deadline(uint64_t delay_ms) {
  tunnel_->close_deadline = uv_now(worker_->loop) + delay_ms;
  arm_tunnel_timer();
}

// The connection's timer in a tunnel: the idle timeout, or the clean-close deadline if earlier.
void ClientConnection::arm_tunnel_timer() {
  uint64_t wait = ms(lconf().tunnel_idle_timeout);
  if (uint64_t deadline = tunnel_->close_deadline; deadline != 0) {
    uint64_t now = uv_now(worker_->loop);
    wait = std::min(wait, deadline > now ? deadline - now : 0);
  }
  client_->set_timeout(wait);
}

void ClientConnection::drain_if_tunnel_to(const std::vector<uint32_t>& backend_ids) {
  if (state_ != State::kTunnel) return;
  uint32_t id = upstream().backends()[static_cast<size_t>(backend_)].state->id;
  if (std::find(backend_ids.begin(), backend_ids.end(), id) == backend_ids.end()) return;
  uint64_t spread = worker_->close_spread_ms;
  close_tunnel_cleanly(kCloseServiceRestart, spread > 0 ? worker_->rng() % spread : 0);
}

// The clean-close deadline passed: first the close delay, then the deadline for the replies.
void ClientConnection::tunnel_timer() {
  TunnelState& t = *tunnel_;
  if (t.close_code == 0 || t.close_started) {
    close_all();  // the sides did not answer our Close in time
    return;
  }
  t.close_started = true;
  if (t.to_backend.at_boundary()) inject_close(true);
  if (state_ == State::kTunnel && t.to_client.at_boundary()) inject_close(false);
  if (state_ == State::kTunnel) set_tunnel_close_deadline(kCloseReplyMs);
}

void ClientConnection::inject_close(bool toward_backend) {
  TunnelState& t = *tunnel_;
  bool& sent = toward_backend ? t.close_sent_to_backend : t.close_sent_to_client;
  if (sent) return;
  sent = true;
  net::Stream* to = toward_backend ? upstream_ : client_;
  if (to->write_side_shut()) {
    // That direction is already half-closed (its source ended): no frame can follow, and the
    // peer's answer is the EOF we propagate.
    finish_clean_close_if_answered();
    return;
  }
  const char* reason = t.close_code == kCloseGoingAway ? "going away" : "service restart";
  if (toward_backend) {
    t.backend_closes_mark = t.to_client.closes();
    upstream_->write(websocket::close_frame(t.close_code, reason, true,
                                            static_cast<uint32_t>(worker_->rng())));
  } else {
    t.client_closes_mark = t.to_backend.closes();
    client_->write(websocket::close_frame(t.close_code, reason, false, 0));
  }
  finish_clean_close_if_answered();
}

void ClientConnection::finish_clean_close_if_answered() {
  const TunnelState& t = *tunnel_;
  if (t.close_sent_to_backend && t.close_sent_to_client &&
      t.to_client.closes() > t.backend_closes_mark && t.to_backend.closes() > t.client_closes_mark) {
    worker_->counters.tunnels_closed_cleanly.fetch_add(1, std::memory_order_relaxed);
    close_after_tunnel_writes();
  }
}

void ClientConnection::tunnel_end(net::Stream* from, int status) {
  if (status != UV_EOF) {
    close_all();
    return;
  }
  net::Stream* to = from == client_ ? upstream_ : client_;
  (from == client_ ? client_ended_ : upstream_ended_) = true;
  to->shutdown_after_writes();  // half-close travels on
  if (client_ended_ && upstream_ended_) close_after_tunnel_writes();
}

// Both directions are finished: close once our queued bytes (a Close frame, the last data) are
// written; on_writable calls back here until they are.
void ClientConnection::close_after_tunnel_writes() {
  tunnel_->finished = true;
  if (client_->out().drained() && upstream_->out().drained()) close_all();
}

void ClientConnection::end_tunnel_accounting() {
  const auto& b = upstream().backends()[static_cast<size_t>(backend_)];
  b.state->tunnels.fetch_sub(1, std::memory_order_relaxed);
  b.state->in_flight.fetch_sub(1, std::memory_order_relaxed);
  if (!route_.session_id.empty()) upstream().forget_session(route_.session_id);
}

// ---------------------------------------------------------------------------------------------
// Ending

void ClientConnection::respond_error(int status) {
  if (response_started_ || state_ == State::kClosing) {
    close_all();
    return;
  }
  drop_upstream();
  worker_->counters.responses_by_class[status / 100].fetch_add(1, std::memory_order_relaxed);
  client_->write(http::simple_response(status, true));
  if (request_) log_access(status);
  close_after_flush();
}

// Lingering close: stop sending after the queued bytes, keep draining (and discarding) input
// for a moment so the peer reads our answer rather than a reset.
void ClientConnection::close_after_flush() {
  drop_upstream();
  state_ = State::kClosing;
  client_->shutdown_after_writes();
  client_->set_timeout(kLingerMs);
  if (client_ended_) {
    if (client_->out().drained()) close_all();
    return;
  }
  client_->start_reading();
}

void ClientConnection::close_all() {
  if (client_->closing()) return;
  if (state_ == State::kTunnel) end_tunnel_accounting();
  drop_upstream();
  state_ = State::kClosing;
  client_->close();
}

}  // namespace limpet::proxy
