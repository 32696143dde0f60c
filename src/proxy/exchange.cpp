#include "limpet/proxy/exchange.hpp"

#include <algorithm>
#include <charconv>

#include "limpet/http/framing.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {
namespace {

bool accepts_websocket(const http::ResponseHead& resp) {
  auto upgrade = resp.header("upgrade");
  auto connection = resp.header("connection");
  return upgrade && connection && http::has_token(*upgrade, "websocket") && http::has_token(*connection, "upgrade");
}

bool is_idempotent(std::string_view method) {
  return method == "GET" || method == "HEAD" || method == "OPTIONS" || method == "PUT" ||
         method == "DELETE" || method == "TRACE";
}

// Response heads from a backend may be larger than a client's request head.
constexpr http::ParserLimits kResponseLimits{64 * 1024, 8 * 1024};

// What an exchange holds while it waits for the session store: a request body (only requests
// whose Content-Length fits ask the store; Engine.IO's polling POSTs do), and the response body
// after the sid before the backend is read no more.
constexpr size_t kMaxHeldBody = 64 * 1024;

// A request that may not be sent twice (it carries a session or a body) takes a pooled
// connection only if it was idle at most this long: the backend is surely still keeping it.
constexpr uint64_t kFreshIdleMs = 1000;
// A backend that says `Keep-Alive: timeout=N` closes an idle connection after N s, counted from
// about when it sent its response: the pool gives it up this much earlier.
constexpr uint64_t kKeepAliveMarginMs = 1000;

bool has_body(const http::RequestHead& r) { return r.chunked || r.content_length.value_or(0) > 0; }

}  // namespace

Exchange::Exchange(WorkerContext* worker, const ListenerContext* listener, ExchangeOwner* owner)
    : worker_(worker), listener_(listener), owner_(owner) {
  response_side_.self = this;
}

Exchange::~Exchange() {
  cancel_store_wait();
  drop_upstream();
}

void Exchange::start(const ExchangeRequest& request) {
  request_ = request;
  tried_.clear();
  chosen_ = nullptr;
  sent_ns_ = 0;
  connect_started_ns_ = 0;
  request_complete_ = false;
  resent_ = false;
  response_started_ = false;
  interim_ = false;
  discarding_ = 0;
  holding_ = false;
  published_ = false;
  held_request_.clear();
  held_body_.clear();
  learner_.reset();
  upstream().route({*request_.head, request_.client_ip, tried_, worker_->rng()}, route_);
  if (route_.sid_unknown && ask_store()) return;  // continues in on_store_lookup
  dispatch();
}

void Exchange::dispatch() {
  if (route_.refresh_store && worker_->sessions != nullptr) {
    worker_->sessions->refresh(upstream().config().name, route_.session_id, upstream().config().session_ttl);
  }
  if (route_.backend < 0) {
    LOG_WARN("upstream %s: no usable backend for %.*s %.*s", upstream().config().name.c_str(),
             static_cast<int>(request_.client_ip.size()), request_.client_ip.data(),
             static_cast<int>(request_.head->path.size()), request_.head->path.data());
    phase_ = Phase::kIdle;
    owner_->on_exchange_failed(503);
    return;
  }
  http::build_request_head(*request_.head,
                           {request_.client_ip, listener_->tls != nullptr, listener_->config->add_forwarded},
                           &request_head_);
  std::vector<std::string> payload;
  if (!held_request_.empty()) {  // body bytes that came while the store was asked
    payload.reserve(held_request_.size() + 1);
    payload.push_back(request_head_);
    for (std::string& part : held_request_) payload.push_back(std::move(part));
    held_request_.clear();
  }
  attempt(route_.backend, std::move(payload));
}

// The sid is not in this instance's table: another instance may have learned it. One round trip,
// bounded by lookup_timeout; the store declines at once (0) when it is down, the sid was
// unknown a moment ago, or this worker has too many lookups out.
bool Exchange::ask_store() {
  store::SessionStore* sessions = worker_->sessions;
  const http::RequestHead& head = *request_.head;
  if (sessions == nullptr || head.chunked || head.content_length.value_or(0) > kMaxHeldBody) return false;
  store_ticket_ = sessions->lookup(upstream().config().name, route_.session_id,
                                   [this](store::LookupResult result, std::string_view backend) {
                                     on_store_lookup(result, backend);
                                   });
  if (store_ticket_ == 0) return false;
  phase_ = Phase::kLookingUp;
  return true;
}

void Exchange::on_store_lookup(store::LookupResult result, std::string_view backend) {
  store_ticket_ = 0;
  if (result == store::LookupResult::kHit && upstream().adopt_session(route_.session_id, backend)) {
    upstream().route({*request_.head, request_.client_ip, tried_, worker_->rng()}, route_);
  }
  dispatch();
}

void Exchange::cancel_store_wait() {
  if (store_ticket_ != 0 && worker_->sessions != nullptr) worker_->sessions->cancel(store_ticket_);
  store_ticket_ = 0;
}

// One attempt on backend `backend`: a pooled connection if there is one, else a new one.
// `payload` is what a failed attempt had queued (head and body so far); empty: the head.
void Exchange::attempt(int backend, std::vector<std::string> payload) {
  lease_ = BackendLease(upstream(), backend, /*count_request=*/!resent_);
  if (route_.new_session) lease_.count_placing();
  chosen_ = &lease_.backend();
  tried_.push_back(backend);
  const balancer::RuntimeBackend& b = lease_.backend();
  LOG_DEBUG("%.*s %.*s %.*s -> %s (%s)", static_cast<int>(request_.client_ip.size()),
            request_.client_ip.data(), static_cast<int>(request_.head->method.size()),
            request_.head->method.data(), static_cast<int>(request_.head->target.size()),
            request_.head->target.data(), b.config->name.c_str(), balancer::to_string(route_.reason));

  char id[16];
  auto [id_end, ec] = std::to_chars(id, id + sizeof id, b.state->id);
  (void)ec;
  pool_key_.assign(id, id_end);
  pool_key_ += '|';
  pool_key_ += b.config->address.text;
  if (listener_->upstream_tls != nullptr) pool_key_ += "|tls";  // never reuse across a TLS switch
  if (response_parser_) {
    response_parser_->reset();
  } else {
    response_parser_ =
        std::make_unique<http::Parser>(http::Parser::Kind::kResponse, kResponseLimits, &response_side_);
  }
  response_parser_->expect_no_body_response(request_.head->method == "HEAD");
  upstream_ended_ = false;

  // After a stale pooled connection, the resend goes on a fresh one: one resend, no more.
  net::Stream* pooled = nullptr;
  if (!resent_ && !private_connections()) {
    const http::RequestHead& r = *request_.head;
    const bool once_only = !route_.session_id.empty() || has_body(r) || !is_idempotent(r.method);
    bool too_old = false;
    pooled = worker_->pool.take(pool_key_, uv_now(worker_->loop), once_only ? kFreshIdleMs : UINT64_MAX, &too_old);
    if (too_old) worker_->counters.pool_not_fresh.fetch_add(1, std::memory_order_relaxed);
  }
  if (pooled != nullptr) {
    upstream_ = pooled;
    reused_ = true;
    upstream_->set_delegate(this);
    phase_ = request_complete_ ? Phase::kAwaitingHead : Phase::kSending;
  } else {
    upstream_ = new net::Stream(worker_->loop, &worker_->buffers);
    reused_ = false;
    if (const tls::ClientContext* tls = listener_->upstream_tls) {
      upstream_->set_filter(tls->new_filter(*b.config, &worker_->counters.tls_backends));
    }
    upstream_->set_delegate(this);
    phase_ = Phase::kConnecting;
    connect_started_ns_ = uv_hrtime();
  }
  if (request_.backend_fd != nullptr) request_.backend_fd->release();  // the socket counts itself now
  response_relay_ = Relay(upstream_, owner_->response_sink());
  sent_ns_ = uv_hrtime();
  first_byte_seen_ = false;
  send_payload(payload);
  if (!request_complete_) request_.body_relay->set_sink(upstream_);
  owner_->on_exchange_progress(false);
  if (phase_ != Phase::kConnecting) {
    response_relay_.update();  // a pooled connection is still reading: this keeps it so
    return;
  }
  int rc = upstream_->connect(reinterpret_cast<const sockaddr*>(&b.addr),
                              [this](int status) { on_connected(status); }, proxy_header());
  if (rc != 0) {
    on_connected(rc);
    return;
  }
  // Reading from now on (libuv reports the connect first): the connect's and the read's interest
  // reach epoll in one call, and one change after the connect. Started in on_connected, it took
  // three: libuv forgets the registration when the connect's interest ends, adds the fd again
  // and gets EEXIST.
  response_relay_.update();
}

// Empty without send_proxy_protocol. Built per connection: a retry elsewhere gets its own.
std::string Exchange::proxy_header() const {
  std::string header;
  const auto send = upstream().config().send_proxy_protocol;
  if (send == config::SendProxyProtocol::kOff) return header;
  const auto version = static_cast<net::ProxyVersion>(send);
  const net::ProxyHeader* e = request_.endpoints;
  if (e != nullptr && e->has_addresses) {
    net::append_proxy_header(version, e->source.get(), e->destination.get(), &header);
  } else {
    net::append_proxy_local_header(version, &header);
  }
  return header;
}

void Exchange::send_payload(const std::vector<std::string>& payload) {
  if (payload.empty()) {
    upstream_->write(request_head_);
    return;
  }
  for (const auto& chunk : payload) upstream_->write(chunk);
}

void Exchange::on_connected(int status) {
  if (status == UV_EMFILE || status == UV_ENFILE) {
    // limpet's own shortage, not the backend's: never counted against it (see the fd budget).
    LOG_WARN("connect to backend %s: %s: answering 503", lease_.name(), uv_strerror(status));
    fail(503, "out of file descriptors");
    return;
  }
  if (status == 0) {
    worker_->counters.connect_latency.observe_us((uv_hrtime() - connect_started_ns_) / 1000);
    phase_ = request_complete_ ? Phase::kAwaitingHead : Phase::kSending;
    upstream_->set_nodelay();
    response_relay_.update();
    if (!request_complete_) request_.body_relay->update();  // the queue may have emptied
    owner_->on_exchange_progress(false);
    return;
  }
  LOG_WARN("connect to backend %s (%s) failed: %s", lease_.name(),
           lease_.backend().config->address.text.c_str(), uv_strerror(status));
  upstream().report_failure(lease_.index(), status == UV_ETIMEDOUT ? "connect timed out" : "connect failed");
  // Nothing reached the backend: what is queued (head and body so far) may go elsewhere.
  retry_elsewhere(502, worker_->counters.retries);
}

// Never for a request that carries a session: a second copy of it would kill the session.
bool Exchange::may_retry() const {
  return route_.session_id.empty() && tried_.size() < upstream().config().max_tries;
}

// A pooled connection that closed before any response byte: a backend closes an idle
// keep-alive connection only when it is not working on a request, so the request was never
// read, and sending it again duplicates nothing if it has no body (a sid's GET included: it
// is exactly what a stale connection would otherwise lose) and may be repeated anyway.
bool Exchange::may_resend_on_fresh_connection() const {
  const http::RequestHead& r = *request_.head;
  return reused_ && !resent_ && !response_started_ && is_idempotent(r.method) && !has_body(r);
}

// An Engine.IO handshake or a WebSocket upgrade without a sid: nothing is learned before its
// answer, so a failed one may go to another backend.
bool Exchange::opens_session() const {
  return route_.handshake || (request_.head->websocket && route_.session_id.empty());
}

bool Exchange::may_retry_new_session() const {
  return opens_session() && may_retry() && request_complete_ && !has_body(*request_.head);
}

bool Exchange::fails_new_session(int status) const {
  const auto& statuses = upstream().config().health.failure_statuses;
  return opens_session() && std::find(statuses.begin(), statuses.end(), status) != statuses.end();
}

void Exchange::retry_elsewhere(int status_if_not, std::atomic<uint64_t>& counter) {
  if (!may_retry()) {
    fail(status_if_not, "connect failed");
    return;
  }
  auto queued = upstream_->out().take_queued();
  drop_upstream();
  response_relay_ = Relay();
  lease_.release();
  // Routed again without the backends tried (a request with a session never gets here).
  upstream().route({*request_.head, request_.client_ip, tried_, worker_->rng()}, route_);
  if (route_.backend < 0) {
    fail(status_if_not, "no other backend");
    return;
  }
  counter.fetch_add(1, std::memory_order_relaxed);
  attempt(route_.backend, std::move(queued));
}

void Exchange::send_body(std::string_view data) {
  if (phase_ == Phase::kLookingUp) {  // Content-Length framing: the bytes as they are
    held_request_.emplace_back(data);
    return;
  }
  http::FramedBody framed(request_.head->chunked ? http::BodyFraming::kChunked : http::BodyFraming::kLength,
                          data);
  request_.body_relay->write(framed.parts());
}

void Exchange::end_body() {
  request_complete_ = true;
  if (phase_ == Phase::kLookingUp) {  // never chunked (ask_store)
    request_.body_relay->set_sink(nullptr);
    return;
  }
  if (request_.head->chunked) upstream_->write(http::kLastChunk);
  request_.body_relay->set_sink(nullptr);
  if (phase_ == Phase::kSending) phase_ = Phase::kAwaitingHead;
  owner_->on_exchange_progress(false);
}

void Exchange::abort() {
  if (phase_ == Phase::kIdle) return;
  cancel_store_wait();
  holding_ = false;
  drop_upstream();
  end();
}

DeadlineSpec Exchange::deadline() const {
  const auto& u = upstream().config();
  const auto& l = *listener_->config;
  if (phase_ == Phase::kConnecting) return {Deadline::kConnect, to_ms(u.connect_timeout)};
  if (phase_ == Phase::kLookingUp || phase_ == Phase::kHolding) {
    return {Deadline::kSessionStore, worker_->sessions->max_wait_ms() + 1000};
  }
  // Whoever is waited on is to blame: a client that reads nothing or sends nothing more is never
  // counted against the backend.
  if (response_started_ && response_relay_.waiting() == Relay::Waiting::kSink) {
    return {Deadline::kClientSend, to_ms(l.send_timeout)};
  }
  if (!request_complete_) {
    if (request_.body_relay->waiting() == Relay::Waiting::kSink) {
      return {Deadline::kUpstreamSend, to_ms(u.send_timeout)};
    }
    return {Deadline::kClientBody, to_ms(l.body_timeout)};
  }
  if (!response_started_) {
    const auto first_byte = opens_session() ? std::min(u.read_timeout, u.handshake_timeout) : u.read_timeout;
    return {Deadline::kFirstByte, to_ms(first_byte)};
  }
  return {Deadline::kUpstreamIdle, to_ms(u.read_timeout)};
}

void Exchange::on_deadline(Deadline kind) {
  if (phase_ == Phase::kIdle) return;
  switch (kind) {
    case Deadline::kConnect:
      LOG_WARN("connect to backend %s timed out", lease_.name());
      on_connected(UV_ETIMEDOUT);
      return;
    case Deadline::kUpstreamSend:
      LOG_WARN("backend %s: took none of the request body within send_timeout", lease_.name());
      upstream().report_failure(lease_.index(), "request body not read within send_timeout");
      fail(504, "send timeout");
      return;
    case Deadline::kFirstByte:
      if (opens_session()) {
        // A hung node (stopped, deadlocked) accepts connections and answers nothing: new
        // sessions leave it after one such timeout, before any active check decides.
        LOG_WARN("backend %s: no answer to a new session within handshake_timeout%s", lease_.name(),
                 may_retry_new_session() ? ": trying another backend" : "");
        upstream().report_new_session_failure(lease_.index(), "no answer to a new session");
        if (may_retry_new_session()) {
          retry_elsewhere(504, worker_->counters.handshake_retries);
        } else {
          fail(504, "handshake timeout");
        }
        return;
      }
      LOG_WARN("backend %s: no response within read_timeout", lease_.name());
      upstream().report_failure(lease_.index(), "no response within read_timeout");
      fail(504, "read timeout");
      return;
    case Deadline::kUpstreamIdle:
      // Not a passive failure: a response that streams slowly (events, a long download) is the
      // application's business; only a backend that does not answer at all is counted.
      LOG_WARN("backend %s: response stalled for read_timeout", lease_.name());
      fail(504, "response stalled");
      return;
    default:
      return;  // the client's deadlines are the owner's
  }
}

const char* Exchange::backend_name() const { return chosen_ ? chosen_->config->name.c_str() : "-"; }

const char* Exchange::route_reason() const { return chosen_ ? balancer::to_string(route_.reason) : "-"; }

uint64_t Exchange::upstream_time_ns(uint64_t now_ns) const { return sent_ns_ ? now_ns - sent_ns_ : 0; }

// ---------------------------------------------------------------------------------------------
// Upstream connection events

void Exchange::on_data(net::Stream*, std::string_view data) {
  if (phase_ == Phase::kIdle) return;
  if (!first_byte_seen_) {
    first_byte_seen_ = true;
    worker_->counters.upstream_first_byte.observe_us((uv_hrtime() - sent_ns_) / 1000);
  }
  parse_response(data);
}

void Exchange::parse_response(std::string_view data) {
  std::string_view rest = data;
  for (;;) {
    auto outcome = response_parser_->execute(rest);
    if (phase_ == Phase::kIdle) return;  // ended from a callback
    if (discarding_ != 0) {  // a new session's failure status: the client never sees it...
      // ...unless no other backend takes it: then it gets that status (from limpet: the body
      // was not read), not a 502 that would blame the wrong hop.
      const int status = std::exchange(discarding_, 0);
      retry_elsewhere(status, worker_->counters.handshake_retries);
      return;
    }
    switch (outcome.state) {
      case http::Parser::State::kNeedMore:
        owner_->flush_response();
        owner_->on_exchange_progress(true);
        return;
      case http::Parser::State::kPaused:
        rest.remove_prefix(outcome.consumed);
        if (interim_) {  // 100 Continue and friends: the real response follows
          interim_ = false;
          response_parser_->resume();
          if (rest.empty()) return;
          continue;
        }
        // Bytes after a complete response mean the connection is not reusable.
        complete(rest.empty());
        return;
      case http::Parser::State::kUpgrade:
        rest.remove_prefix(outcome.consumed);
        upgrade(rest);
        return;
      case http::Parser::State::kError:
        LOG_WARN("backend %s sent an invalid response: %s", lease_.name(),
                 response_parser_->error_reason().c_str());
        fail(502, "invalid response");
        return;
    }
  }
}

void Exchange::on_end(net::Stream*, int status) {
  upstream_ended_ = true;
  if (phase_ == Phase::kIdle) return;
  if (response_started_ && response_parser_->needs_eof()) {
    auto outcome = response_parser_->finish();  // an until-close body ends here
    if (outcome.state != http::Parser::State::kError) {
      complete(false);
      return;
    }
  }
  if (may_resend_on_fresh_connection()) {
    LOG_DEBUG("stale pooled connection to %s, sending again on a new one", lease_.name());
    worker_->counters.stale_resends.fetch_add(1, std::memory_order_relaxed);
    resent_ = true;
    drop_upstream();
    tried_.pop_back();
    attempt(route_.backend, {});
    return;
  }
  if (!response_started_ && upstream_->out().bytes_sent() == 0) {
    retry_elsewhere(502, worker_->counters.retries);
    return;
  }
  LOG_WARN("backend %s closed the connection mid-%s: %s", lease_.name(),
           response_started_ ? "response" : "request", uv_strerror(status));
  fail(502, "backend closed");
}

void Exchange::on_writable(net::Stream*) {
  if (phase_ != Phase::kIdle && !request_complete_) request_.body_relay->update();
  owner_->on_exchange_progress(true);
}

// ---------------------------------------------------------------------------------------------
// Response

bool Exchange::on_response_head() {
  const http::ResponseHead& resp = response_parser_->response();
  if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
    interim_ = true;
    owner_->on_interim_response(resp);
    return false;
  }
  if (resp.status == 101 && !(request_.head->websocket && accepts_websocket(resp))) {
    // Any other 101 (to a request that was no WebSocket upgrade, or without Upgrade: websocket
    // and Connection: upgrade) is refused: never forwarded, never pooled (whatever follows on
    // that connection is not HTTP any more).
    LOG_WARN("backend %s answered 101 to a request it may not switch: refused", lease_.name());
    fail(502, "unexpected 101");
    return false;
  }
  if (fails_new_session(resp.status)) {
    const bool retry = may_retry_new_session();
    LOG_WARN("backend %s answered %d to a new session%s", lease_.name(), resp.status,
             retry ? ": trying another backend" : "");
    upstream().report_new_session_failure(lease_.index(), "a failure status to a new session");
    lease_.state().count_response(resp.status);
    if (retry) {
      discarding_ = resp.status;  // parse_response retries once the parser returns
      return true;         // its body is not read
    }
  } else if (opens_session() && resp.status < 400) {
    lease_.state().new_session_succeeded();
  }
  if (route_.handshake) {
    learner_.begin(upstream(), lease_.index(), resp);
    // Learn before release: with a store, the client sees the sid only once the store has it,
    // so its next request may reach any instance.
    // (A store that is down declines the publish at once: the hold ends with the sid's parse.)
    holding_ = worker_->sessions != nullptr && (learner_.reading() || !learner_.sid().empty());
  }
  std::string cookie;
  if (route_.set_cookie) cookie = upstream().sticky_cookie_value(lease_.index());
  lease_.state().count_response(resp.status);
  response_started_ = true;
  phase_ = Phase::kReceiving;
  if (holding_) {
    held_cookie_ = std::move(cookie);
    publish_learned_sid();
    return false;
  }
  owner_->on_response_head(resp, cookie);
  return false;
}

bool Exchange::on_response_body(std::string_view data) {
  if (discarding_ != 0) return true;
  learner_.on_body(data);
  if (holding_) {
    held_body_.append(data);
    response_relay_.hold(held_body_.size() >= kMaxHeldBody);
    publish_learned_sid();
    return true;
  }
  owner_->on_response_body(data);
  response_relay_.update();
  return true;
}

void Exchange::on_response_end() {
  if (interim_ || discarding_ != 0) return;
  learner_.on_end();
  if (holding_) publish_learned_sid();  // a body that carried no sid releases the response now
}

void Exchange::publish_learned_sid() {
  if (!holding_ || published_) return;
  if (learner_.sid().empty()) {
    if (!learner_.reading()) release_response();  // it gave up: nothing to wait for
    return;
  }
  published_ = true;
  store_ticket_ = worker_->sessions->publish(upstream().config().name, learner_.sid(), lease_.name(),
                                             upstream().config().session_ttl, [this](store::PublishResult) {
                                               store_ticket_ = 0;
                                               release_response();
                                             });
  if (store_ticket_ == 0) release_response();  // the store went away: release now
}

// The held response goes to the owner as if it had just arrived; if the backend finished it
// meanwhile, the exchange ends here.
void Exchange::release_response() {
  if (!holding_) return;
  holding_ = false;
  owner_->on_response_head(response_parser_->response(), held_cookie_);
  if (!held_body_.empty()) owner_->on_response_body(held_body_);
  held_body_.clear();
  owner_->flush_response();
  if (phase_ == Phase::kHolding) {
    phase_ = Phase::kIdle;
    owner_->on_response_end();
    return;
  }
  response_relay_.hold(false);
  owner_->on_exchange_progress(true);
}

void Exchange::upgrade(std::string_view leftover) {
  if (!request_.head->websocket || response_parser_->response().status != 101) {
    fail(502, "unexpected upgrade");
    return;
  }
  UpgradeHandoff handoff{upstream_, leftover, std::move(lease_), route_.session_id,
                         route_.reason == balancer::RouteReason::kAffinity};
  upstream_->set_delegate(nullptr);
  upstream_ = nullptr;
  end();
  owner_->on_upgraded(std::move(handoff));
}

// ---------------------------------------------------------------------------------------------
// Ending

void Exchange::complete(bool reusable) {
  const http::ResponseHead& resp = response_parser_->response();
  uint64_t idle_ms = to_ms(upstream().config().keepalive_idle_timeout);
  if (auto header = resp.header("keep-alive")) {
    if (auto seconds = http::keep_alive_timeout_s(*header)) {  // the backend's own idle timeout
      idle_ms = std::min(idle_ms, *seconds * 1000 > kKeepAliveMarginMs ? *seconds * 1000 - kKeepAliveMarginMs : 0);
    }
  }
  reusable = reusable && !upstream_ended_ && request_complete_ && !worker_->shutting_down && resp.keep_alive &&
             !private_connections() && idle_ms > 0;
  if (reusable) {
    // It keeps reading: the pool watches it for a close, and stopping and restarting the read
    // would cost two epoll_ctl calls per request.
    upstream_->set_delegate(nullptr);
    worker_->pool.give(pool_key_, upstream_, upstream().config().keepalive_max_idle, idle_ms,
                       uv_now(worker_->loop));
    upstream_ = nullptr;
  } else {
    drop_upstream();
  }
  end();
  if (holding_) {  // the backend is done; the client hears of it once the store has the sid
    phase_ = Phase::kHolding;
    owner_->on_exchange_progress(false);
    return;
  }
  owner_->on_response_end();
}

void Exchange::fail(int status, const char* why) {
  LOG_DEBUG("exchange with %s failed (%s): answering %d", backend_name(), why, status);
  if (!response_started_ && lease_) lease_.state().count_response(status);
  cancel_store_wait();
  holding_ = false;
  drop_upstream();
  end();
  owner_->on_exchange_failed(status);
}

void Exchange::end() {
  response_relay_ = Relay();  // its source is pooled, closed or the tunnel's now
  lease_.release();
  if (!request_complete_) request_.body_relay->set_sink(nullptr);
  phase_ = Phase::kIdle;
}

// Closes the current upstream connection without waiting for it: it frees itself.
void Exchange::drop_upstream() {
  if (upstream_ == nullptr) return;
  upstream_->set_delegate(nullptr);
  upstream_->close();
  upstream_ = nullptr;
}

}  // namespace limpet::proxy
