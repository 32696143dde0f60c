#include "limpet/proxy/http2_session.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <utility>
#include <vector>

#include "limpet/http/message.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/http/websocket.hpp"
#include "limpet/net/out_queue.hpp"
#include "limpet/proxy/client_connection.hpp"
#include "limpet/proxy/exchange.hpp"
#include "limpet/proxy/tunnel.hpp"
#include "limpet/util/log.hpp"
#include "limpet/util/strings.hpp"

namespace limpet::proxy {
namespace {

// Bytes of frames gathered into one write to the client.
constexpr size_t kGatherBytes = 64 * 1024;
// After GOAWAY and the last frame: how long the client has to read them and close.
constexpr uint64_t kLingerMs = 2000;
// nghttp2's own defaults, written out: they are the protections this file relies on.
constexpr size_t kMaxSettingsPerFrame = 32;
constexpr size_t kMaxQueuedAcks = 1000;   // SETTINGS/PING acks a client that does not read piles up
constexpr size_t kMaxContinuations = 8;   // CONTINUATION frames per header block (CVE-2024-28182)
constexpr uint64_t kResetBurst = 1000;    // RST_STREAMs accepted at once, then kResetRate per
constexpr uint64_t kResetRate = 33;       // second (rapid reset, CVE-2023-44487)

std::string_view as_view(const uint8_t* data, size_t size) { return {reinterpret_cast<const char*>(data), size}; }

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}

bool has_response_body(std::string_view method, int status) {
  return method != "HEAD" && status != 204 && status != 304 && status >= 200;
}

}  // namespace

// One stream: its request head as HTTP/1 code expects it, the Exchange, and the response bytes
// its window has not let out yet. As the request body's source it is "read" while its window is
// given back; as the response's sink, its unsent bytes are what the relay weighs. After an
// extended CONNECT (RFC 8441) answered 101 by the backend it is a Tunnel's client side, the same
// way. It keeps what a tunnel asks of its owner (worker, listener, client address) itself: a
// closed stream is freed at the end of the loop turn, when its connection may be gone.
class Http2Stream final : public ExchangeOwner, public net::ByteStream, public TunnelOwner {
 public:
  Http2Stream(Http2Session& session, int32_t id)
      : session_(session),
        id_(id),
        worker_(session.conn().worker()),
        listener_(session.conn().listener_ref()),
        client_ip_(session.conn().client_ip()),
        body_in_(this, nullptr),
        exchange_(worker_, listener_.get(), this),
        started_ns_(uv_hrtime()) {}
  ~Http2Stream() override {
    closed_ = true;  // nothing below may reach the session: it may be gone
    exchange_.abort();
    if (timer_ != nullptr) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    }
  }

  // A field of the request's header block; past max_header_size the rest is dropped and the
  // request answered 431 (nghttp2 has checked the field's syntax).
  void add_field(std::string_view name, std::string_view value) {
    header_bytes_ += name.size() + value.size() + 32;  // RFC 9113 §6.5.2's accounting
    if (header_bytes_ > listener_->config->max_header_size) {
      too_large_ = true;
      return;
    }
    if (too_large_) return;
    std::string& storage = head_.storage;
    if (fields_.empty()) storage.reserve(512);
    fields_.push_back({storage.size(), name.size(), storage.size() + name.size(), value.size()});
    storage.append(name).append(value);
  }

  void on_request_head(bool end_stream);
  void on_request_data(std::string_view data);
  void on_request_end();
  // nghttp2 closed the stream (both sides done, or a reset either way).
  void on_closed(uint32_t error_code);
  // The client connection is going (its streams get no close callback): let go of the backend
  // now, logged as the client's abort.
  void abort();
  ssize_t read_response(uint8_t* buf, size_t length, uint32_t* flags);
  // Our END_STREAM went out: a stream whose client side is still open is reset (NO_ERROR) if
  // close() asked for it.
  void on_end_stream_sent();
  Tunnel* tunnel() { return tunnel_.get(); }

  // ExchangeOwner
  void on_interim_response(const http::ResponseHead& head) override;
  void on_response_head(const http::ResponseHead& head, std::string_view set_cookie) override;
  void on_response_body(std::string_view data) override { write(data); }
  void flush_response() override { session_.send_soon(); }
  void on_response_end() override;
  void on_exchange_failed(int status) override;
  void on_upgraded(UpgradeHandoff handoff) override;
  net::ByteStream* response_sink() override { return this; }
  void on_exchange_progress(bool) override { arm_timer(); }

  // net::ByteStream: the request body's source, the response's sink.
  void start_reading() override;
  void stop_reading() override { reading_ = false; }
  bool closing() const override { return closed_; }
  using net::ByteStream::write;
  void write(std::span<const std::string_view> parts) override;
  size_t pending() const override { return out_.size() - out_taken_; }
  void shutdown_after_writes() override;
  bool write_side_shut() const override { return response_ended_; }

  // TunnelOwner
  WorkerContext* worker() const override { return worker_; }
  const ListenerContext& listener() const override { return *listener_; }
  std::string_view client_ip() const override { return client_ip_; }
  net::ByteStream* tunnel_client() override { return this; }
  void tunnel_deadline_changed() override { arm_timer(); }
  void close() override;

 private:
  void build_head(bool end_stream);
  // The stream is over (closed by nghttp2, or its connection is going): its backend goes, an
  // answer still in flight is the client's abort.
  void end(bool reset_by_client);
  // A refusal or an answer of limpet's own, headers only.
  void respond(int status);
  // fields[0] is the slot for :status.
  void submit_head(int status, std::vector<nghttp2_nv>& fields, bool with_body);
  void reset(uint32_t error_code);
  void log_access(int status);
  DeadlineSpec deadline() const;
  void arm_timer();
  void start_timer(uint64_t ms);
  void on_timer();

  Http2Session& session_;
  int32_t id_;
  WorkerContext* worker_;
  std::shared_ptr<const ListenerContext> listener_;
  std::string client_ip_;
  // The request's fields while its header block arrives: their bytes in head_.storage.
  struct Field {
    size_t name_at, name_size, value_at, value_size;
  };
  std::vector<Field> fields_;
  size_t header_bytes_ = 0;
  http::RequestHead head_;
  Relay body_in_;  // this stream → the backend: the only decider of giving the window back
  Exchange exchange_;
  std::unique_ptr<Tunnel> tunnel_;  // after a 101 to an extended CONNECT
  std::string early_;  // tunnel bytes the client sent before the backend's 101
  std::string out_;  // response bytes nghttp2 has not taken yet, from out_taken_ on
  size_t out_taken_ = 0;
  uint64_t unconsumed_ = 0;  // request bytes received, window not given back (the backend is behind)
  uint64_t body_bytes_ = 0;
  uint64_t sent_bytes_ = 0;
  uint64_t started_ns_;
  uv_timer_t* timer_ = nullptr;  // created with the first deadline
  uint64_t deadline_ms_ = 0;      // loop time timer_kind_ expires; the timer may be set earlier
  Deadline timer_kind_ = Deadline::kNone;
  int status_ = 0;
  bool too_large_ = false;
  bool reading_ = true;
  bool request_ended_ = false;
  bool response_started_ = false;
  bool response_ended_ = false;
  bool logged_ = false;
  bool closed_ = false;
  bool reset_after_end_ = false;  // close(): RST_STREAM once our END_STREAM is sent
  bool end_stream_sent_ = false;
  bool extended_connect_ = false;  // the request carried :protocol (RFC 8441)
};

// ---------------------------------------------------------------------------------------------
// The request

void Http2Stream::build_head(bool end_stream) {
  // The fields are in head_.storage already (add_field); what is added here goes after them,
  // and only then are views taken: nothing reallocates under a view.
  std::string& storage = head_.storage;
  auto text = [&storage](size_t at, size_t size) { return std::string_view(storage).substr(at, size); };
  struct Span {
    size_t at = 0, size = 0;
  };
  Span method, path, authority, protocol, cookie, host, key;
  bool has_host = false;
  for (const Field& f : fields_) {
    const std::string_view name = text(f.name_at, f.name_size);
    const Span value{f.value_at, f.value_size};
    if (name == ":method") method = value;
    if (name == ":path") path = value;
    if (name == ":authority") authority = value;
    if (name == ":protocol") protocol = value;
    if (name == "host") has_host = true;
  }
  // RFC 9113 §8.2.3: cookie crumbs go to HTTP/1 as one header, joined with "; ".
  for (const Field& f : fields_) {
    if (text(f.name_at, f.name_size) != "cookie") continue;
    const std::string crumb(text(f.value_at, f.value_size));
    if (cookie.size == 0) cookie.at = storage.size();
    if (cookie.size != 0) storage.append("; ");
    storage.append(crumb);
    cookie.size = storage.size() - cookie.at;
  }
  // RFC 8441: CONNECT with :protocol websocket is, for the backend, an HTTP/1.1 upgrade (a GET
  // with the key limpet makes; Connection and Upgrade are added by the head rewrite).
  const bool websocket = text(method.at, method.size) == "CONNECT" && text(protocol.at, protocol.size) == "websocket";
  if (websocket) {
    key = {storage.size(), 24};
    storage.append(http::websocket::handshake_key(worker_->rng(), worker_->rng()));
    method = {storage.size(), 3};
    storage.append("GET");
  }
  if (!has_host && authority.size != 0) {
    host = {storage.size(), 4};
    storage.append("host");
  }
  head_.method = text(method.at, method.size);
  head_.target = text(path.at, path.size);
  const size_t q = head_.target.find('?');
  head_.path = head_.target.substr(0, q);
  head_.query = q == std::string_view::npos ? std::string_view() : head_.target.substr(q + 1);
  if (host.size != 0) head_.headers.push_back({text(host.at, host.size), text(authority.at, authority.size)});
  for (const Field& f : fields_) {
    const std::string_view name = text(f.name_at, f.name_size);
    if (name.starts_with(':') || name == "cookie") continue;
    const std::string_view value = text(f.value_at, f.value_size);
    head_.headers.push_back({name, value});
    if (name == "content-length") {
      uint64_t length = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), length);
      if (ec == std::errc() && end == value.data() + value.size()) head_.content_length = length;
    }
  }
  if (cookie.size != 0) head_.headers.push_back({"cookie", text(cookie.at, cookie.size)});
  if (websocket) head_.headers.push_back({"sec-websocket-key", text(key.at, key.size)});
  head_.upgrade = head_.websocket = websocket;
  extended_connect_ = protocol.size != 0;
  head_.http_major = 2;
  head_.http_minor = 0;
  // A body of unknown length goes to the backend chunked (HTTP/2 carries no Transfer-Encoding).
  head_.chunked = !end_stream && !head_.content_length && !websocket;
  fields_.clear();
  fields_.shrink_to_fit();
}

void Http2Stream::on_request_head(bool end_stream) {
  WorkerContext& worker = *worker_;
  const config::ListenerConfig& listener = *listener_->config;
  worker.counters.requests.fetch_add(1, std::memory_order_relaxed);
  worker.counters.http2_streams.fetch_add(1, std::memory_order_relaxed);
  request_ended_ = end_stream;
  if (too_large_) {
    fields_.clear();
    respond(431);
    return;
  }
  build_head(end_stream);
  if (head_.method == "CONNECT" || (extended_connect_ && !head_.websocket)) {
    respond(501);  // limpet is no forward proxy, and tunnels only WebSockets
    return;
  }
  if (head_.websocket) worker_->counters.http2_websockets.fetch_add(1, std::memory_order_relaxed);
  if (!head_.header("host")) {
    LOG_INFO("bad request from %s: HTTP/2 request without :authority or host", client_ip_.data());
    respond(400);
    return;
  }
  if (!listener.ready_path.empty() && head_.path == listener.ready_path) {
    respond(worker.shutting_down || worker.close_after_response ? 503 : 200);
    return;
  }
  if (listener.max_body_size > 0 && head_.content_length && *head_.content_length > listener.max_body_size) {
    respond(413);
    return;
  }
  const bool send_proxy =
      listener_->upstream->config().send_proxy_protocol != config::SendProxyProtocol::kOff;
  exchange_.start({&head_, client_ip_, &body_in_,
                   send_proxy ? &session_.conn().endpoints() : nullptr, &session_.conn().backend_fd()});
  if ((end_stream || head_.websocket) && exchange_.active()) exchange_.end_body();
  arm_timer();
}

void Http2Stream::on_request_data(std::string_view data) {
  nghttp2_session* s = session_.session();
  // The connection's window goes back at once: only this stream's may wait for its backend.
  nghttp2_session_consume_connection(s, data.size());
  const size_t max_body = listener_->config->max_body_size;
  body_bytes_ += data.size();
  if (tunnel_) {
    tunnel_->on_client_data(data);
  } else if (head_.websocket && exchange_.active()) {
    early_.append(data);  // tunnel bytes ahead of the 101; the window stays closed meanwhile
    reading_ = false;
  } else if (exchange_.active() && !exchange_.request_complete()) {
    if (max_body > 0 && body_bytes_ > max_body) {
      if (response_started_) {
        reset(NGHTTP2_CANCEL);  // the backend answered already: only a reset can end it now
      } else {
        exchange_.abort();
        respond(413);
      }
    } else {
      exchange_.send_body(data);
    }
  }
  if (reading_ || (!exchange_.active() && !tunnel_)) {
    nghttp2_session_consume_stream(s, id_, data.size());
  } else {
    unconsumed_ += data.size();
  }
  arm_timer();
}

void Http2Stream::on_request_end() {
  request_ended_ = true;
  if (tunnel_) {
    tunnel_->on_client_end(UV_EOF);  // the half-close travels on to the backend
  } else if (exchange_.active() && !exchange_.request_complete()) {
    exchange_.end_body();
  }
}

void Http2Stream::abort() {
  if (closed_) return;
  end(false);
}

void Http2Stream::end(bool reset_by_client) {
  closed_ = true;
  if (timer_ != nullptr) uv_timer_stop(timer_);
  if (tunnel_) {
    // The backend goes now; the tunnel's close line is written when this stream is freed (at
    // the end of the loop turn: the tunnel may be on the call stack).
    tunnel_->drop_upstream();
    return;
  }
  if (exchange_.active()) {
    // Before the answer was complete: the client's abort, logged 499 as nginx does.
    worker_->counters.client_aborts.fetch_add(1, std::memory_order_relaxed);
    if (reset_by_client) worker_->counters.http2_resets_by_client.fetch_add(1, std::memory_order_relaxed);
    exchange_.abort();
  }
  if (!head_.method.empty()) log_access(response_started_ ? status_ : kClientClosedRequest);  // once
}

void Http2Stream::start_reading() {
  reading_ = true;
  if (unconsumed_ == 0 || closed_) return;
  nghttp2_session_consume_stream(session_.session(), id_, unconsumed_);
  unconsumed_ = 0;
  session_.send_soon();  // the WINDOW_UPDATE
}

void Http2Stream::on_closed(uint32_t error_code) { end(error_code != NGHTTP2_NO_ERROR); }

// ---------------------------------------------------------------------------------------------
// The response

void Http2Stream::submit_head(int status, std::vector<nghttp2_nv>& fields, bool with_body) {
  char status_text[4];
  std::to_chars(status_text, status_text + 3, std::clamp(status, 100, 999));
  fields[0] = make_nv(":status", std::string_view(status_text, 3));
  nghttp2_data_provider provider{};
  provider.source.ptr = this;
  provider.read_callback = [](nghttp2_session*, int32_t, uint8_t* buf, size_t length, uint32_t* flags,
                              nghttp2_data_source* source, void*) -> ssize_t {
    return static_cast<Http2Stream*>(source->ptr)->read_response(buf, length, flags);
  };
  status_ = status;
  response_started_ = true;
  response_ended_ = !with_body;
  worker_->counters.responses_by_class[std::clamp(status / 100, 0, 5)].fetch_add(
      1, std::memory_order_relaxed);
  nghttp2_submit_response(session_.session(), id_, fields.data(), fields.size(), with_body ? &provider : nullptr);
}

void Http2Stream::respond(int status) {
  std::vector<nghttp2_nv>& fields = session_.head_scratch().fields;
  fields.assign({{}, make_nv("content-length", "0")});  // [0]: :status
  submit_head(status, fields, false);
  log_access(status);
  session_.send_soon();  // the rest of the request, if any, is read and dropped
}

void Http2Stream::on_interim_response(const http::ResponseHead& head) {
  char status_text[4];
  std::to_chars(status_text, status_text + 3, std::clamp(head.status, 100, 199));
  nghttp2_nv status = make_nv(":status", std::string_view(status_text, 3));
  nghttp2_submit_headers(session_.session(), NGHTTP2_FLAG_NONE, id_, nullptr, &status, 1, nullptr);
  session_.send_soon();
}

void Http2Stream::on_response_head(const http::ResponseHead& head, std::string_view set_cookie) {
  // Lower-case names (RFC 9113 §8.2.2), hop-by-hop fields dropped (§8.2.2 again).
  Http2Session::HeadScratch& scratch = session_.head_scratch();
  std::string& names = scratch.names;
  auto& kept = scratch.kept;  // offset of the lowered name, value
  std::vector<nghttp2_nv>& fields = scratch.fields;
  names.clear();
  kept.clear();
  fields.clear();
  names.reserve(head.storage.size());  // no reallocation under the views taken below
  const std::string_view connection = head.header("connection").value_or("");
  // RFC 8441 §5: the backend's 101 is a 200 to the HTTP/2 client, with no accept key.
  const bool upgraded = head.status == 101;
  for (const auto& h : head.headers) {
    if (http::is_hop_by_hop(h.name, connection)) continue;
    if (upgraded && http::iequals(h.name, "sec-websocket-accept")) continue;
    kept.emplace_back(names.size(), h.value);
    for (char c : h.name) names.push_back(ascii_lower(c));
  }
  fields.push_back({});  // :status, set by submit_head
  for (size_t i = 0; i < kept.size(); ++i) {
    const size_t end = i + 1 < kept.size() ? kept[i + 1].first : names.size();
    fields.push_back(make_nv(std::string_view(names).substr(kept[i].first, end - kept[i].first), kept[i].second));
  }
  if (!set_cookie.empty()) fields.push_back(make_nv("set-cookie", set_cookie));
  if (upgraded) {
    submit_head(200, fields, true);
  } else {
    submit_head(head.status, fields, has_response_body(head_.method, head.status));
  }
}

void Http2Stream::write(std::span<const std::string_view> parts) {
  if (response_ended_ || closed_) return;
  for (auto part : parts) out_.append(part);
  nghttp2_session_resume_data(session_.session(), id_);
  session_.send_soon();
}

void Http2Stream::shutdown_after_writes() {
  if (response_ended_) return;
  response_ended_ = true;
  if (closed_) return;
  nghttp2_session_resume_data(session_.session(), id_);
  session_.send_soon();
}

ssize_t Http2Stream::read_response(uint8_t* buf, size_t length, uint32_t* flags) {
  const bool was_full = pending() > net::OutQueue::kLowWater;
  const size_t n = std::min(length, pending());
  std::memcpy(buf, out_.data() + out_taken_, n);
  out_taken_ += n;
  sent_bytes_ += n;
  if (out_taken_ == out_.size()) {
    out_.clear();
    out_taken_ = 0;
  } else if (out_taken_ >= kGatherBytes) {
    out_.erase(0, out_taken_);
    out_taken_ = 0;
  }
  if (pending() == 0 && response_ended_) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  } else if (n == 0) {
    return NGHTTP2_ERR_DEFERRED;
  }
  // Under the low-water mark again (or drained: a closing tunnel waits for that), the backend
  // may be read: this only restarts its reads.
  if ((was_full && pending() <= net::OutQueue::kLowWater) || (n > 0 && pending() == 0)) {
    if (tunnel_) {
      tunnel_->on_client_writable();
    } else {
      exchange_.on_client_writable();
    }
  }
  if (n > 0) arm_timer();
  return static_cast<ssize_t>(n);
}

void Http2Stream::on_response_end() {
  shutdown_after_writes();
  worker_->counters.request_latency.observe_us((uv_hrtime() - started_ns_) / 1000);
  log_access(status_);
  arm_timer();
  session_.send_soon();
}

void Http2Stream::on_exchange_failed(int status) {
  if (!response_started_) {
    respond(status);
    return;
  }
  log_access(status_);
  reset(NGHTTP2_INTERNAL_ERROR);  // the client has part of a response: only a reset tells it
}

void Http2Stream::on_upgraded(UpgradeHandoff handoff) {
  log_access(200);
  const std::string_view leftover = handoff.leftover;
  tunnel_ = std::make_unique<Tunnel>(*this, std::move(handoff));
  std::string early;
  early.swap(early_);
  tunnel_->start(leftover, early);  // its client relay opens this stream's window again
  arm_timer();
  session_.send_soon();
}

void Http2Stream::close() {
  if (tunnel_) tunnel_->drop_upstream();
  if (closed_) return;
  if (timer_ != nullptr) uv_timer_stop(timer_);
  if (request_ended_) {
    shutdown_after_writes();  // END_STREAM after what is queued closes the stream
  } else if (end_stream_sent_) {
    reset(NGHTTP2_NO_ERROR);  // the client's side is still open
  } else {
    // Not before our last DATA: a RST_STREAM can overtake DATA frames queued in nghttp2.
    shutdown_after_writes();
    reset_after_end_ = true;
  }
  session_.send_soon();
}

void Http2Stream::on_end_stream_sent() {
  end_stream_sent_ = true;
  if (reset_after_end_ && !closed_) {
    reset_after_end_ = false;
    nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, NGHTTP2_NO_ERROR);
  }
}

void Http2Stream::reset(uint32_t error_code) {
  if (closed_) return;
  exchange_.abort();
  nghttp2_submit_rst_stream(session_.session(), NGHTTP2_FLAG_NONE, id_, error_code);
  session_.send_soon();
}

void Http2Stream::log_access(int status) {
  if (logged_) return;
  logged_ = true;
  const uint64_t now = uv_hrtime();
  AccessEntry entry;
  entry.client_ip = client_ip_;
  entry.request = &head_;
  entry.status = status;
  entry.bytes = sent_bytes_ + pending();
  entry.duration_ns = now - started_ns_;
  entry.upstream_time_ns = exchange_.upstream_time_ns(now);
  entry.upstream = listener_->upstream->config().name;
  entry.backend = exchange_.backend_name();
  entry.reason = exchange_.route_reason();
  worker_->access_log.write(entry);
}

// ---------------------------------------------------------------------------------------------
// The stream's own deadline (the connection's timer is the connection's: idle, not reading)

DeadlineSpec Http2Stream::deadline() const {
  if (closed_) return {};
  if (tunnel_) return tunnel_->deadline();
  if (exchange_.active()) return exchange_.deadline();
  if (response_started_ && pending() > 0) {
    return {Deadline::kClientSend, to_ms(listener_->config->send_timeout)};
  }
  return {};
}

void Http2Stream::arm_timer() {
  const DeadlineSpec next = deadline();
  if (next.kind == Deadline::kNone) {
    if (timer_ != nullptr) uv_timer_stop(timer_);
    timer_kind_ = Deadline::kNone;
    return;
  }
  const bool restart = next.kind != timer_kind_ || extends_on_activity(next.kind);
  if (!restart) return;
  timer_kind_ = next.kind;
  const uint64_t now = uv_now(worker_->loop);
  const bool later = timer_ != nullptr && uv_is_active(reinterpret_cast<uv_handle_t*>(timer_)) && now + next.ms >= deadline_ms_;
  deadline_ms_ = now + next.ms;
  // As net::Stream's: moving a deadline later (every DATA frame of an upload or a response)
  // touches no timer; it fires at the old deadline and sleeps again until the new one.
  if (!later) start_timer(next.ms);
}

void Http2Stream::start_timer(uint64_t ms) {
  if (timer_ == nullptr) {
    timer_ = new uv_timer_t;
    uv_timer_init(worker_->loop, timer_);
    timer_->data = this;
  }
  uv_timer_start(timer_, [](uv_timer_t* t) { static_cast<Http2Stream*>(t->data)->on_timer(); }, ms, 0);
}

void Http2Stream::on_timer() {
  const uint64_t now = uv_now(worker_->loop);
  if (now < deadline_ms_) {
    start_timer(deadline_ms_ - now);  // moved later since the timer was set
    return;
  }
  const Deadline kind = std::exchange(timer_kind_, Deadline::kNone);
  LOG_DEBUG("client %s: HTTP/2 stream %d: %s deadline passed", client_ip_.data(), id_,
            to_string(kind));
  if (tunnel_) {
    if (kind == Deadline::kTunnelIdle && !tunnel_->idle_expired(now)) {
      // Tunnel traffic moves its idle deadline without telling us: look again in a second (the
      // granularity of the worker's sweep of HTTP/1 tunnels).
      timer_kind_ = kind;
      deadline_ms_ = now + 1000;
      start_timer(1000);
      return;
    }
    tunnel_->on_deadline(kind);
  } else if (blames_backend(kind) && exchange_.active()) {
    exchange_.on_deadline(kind);  // answered 504 (or reset) through on_exchange_failed
  } else if (kind == Deadline::kClientBody && !response_started_) {
    exchange_.abort();
    respond(408);
  } else {
    log_access(response_started_ ? status_ : 408);
    reset(NGHTTP2_CANCEL);
  }
  arm_timer();
}

// ---------------------------------------------------------------------------------------------
// The session

Http2Session::Http2Session(ClientConnection& conn) : conn_(conn) {
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, on_begin_headers_cb);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, on_header_cb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, on_frame_recv_cb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, on_data_chunk_recv_cb);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, on_stream_close_cb);
  nghttp2_session_callbacks_set_on_frame_send_callback(callbacks, on_frame_send_cb);
  nghttp2_option* options = nullptr;
  nghttp2_option_new(&options);
  nghttp2_option_set_no_auto_window_update(options, 1);
  nghttp2_option_set_max_settings(options, kMaxSettingsPerFrame);
  nghttp2_option_set_max_outbound_ack(options, kMaxQueuedAcks);
  nghttp2_option_set_max_continuations(options, kMaxContinuations);
  nghttp2_option_set_stream_reset_rate_limit(options, kResetBurst, kResetRate);
  nghttp2_session_server_new2(&session_, callbacks, this, options);
  nghttp2_option_del(options);
  nghttp2_session_callbacks_del(callbacks);

  const config::ListenerConfig& listener = *conn_.listener().config;
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, listener.http2_max_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(listener.max_header_size)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL, 1},  // RFC 8441: WebSockets over HTTP/2
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, std::size(settings));
  flush_ = new uv_check_t;
  uv_check_init(conn_.worker()->loop, flush_);
  uv_unref(reinterpret_cast<uv_handle_t*>(flush_));
  flush_->data = this;
  conn_.worker()->counters.http2_connections.fetch_add(1, std::memory_order_relaxed);
}

Http2Session::~Http2Session() {
  flush_->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(flush_), [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
  for (auto& [id, stream] : streams_) stream->abort();
  streams_.clear();
  nghttp2_session_del(session_);
}

Http2Stream* Http2Session::find(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Http2Session::on_client_data(std::string_view data) {
  if (finished_) return;
  in_nghttp2_ = true;
  const ssize_t r = nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(data.data()), data.size());
  in_nghttp2_ = false;
  if (r < 0) {
    // Fatal for the connection (bad preface, a flood: too many CONTINUATIONs, queued ACKs): the
    // session reads no more, so it ends here, with a GOAWAY if one can still be written.
    LOG_INFO("HTTP/2 from %s: %s: closing the connection", conn_.client_ip().data(),
             nghttp2_strerror(static_cast<int>(r)));
    nghttp2_session_terminate_session(session_, NGHTTP2_ENHANCE_YOUR_CALM);
    abort();
    send();
    if (!finished_) finish();
    return;
  }
  send();
}

void Http2Session::on_client_end(int status) {
  (void)status;
  // No half-closed HTTP/2 connection: the client that ends it has given up on its streams.
  abort();
  conn_.close();
}

void Http2Session::on_client_writable() {
  if (!finished_) send();
}

void Http2Session::send_soon() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  uv_check_start(flush_, [](uv_check_t* h) {
    uv_check_stop(h);
    if (auto* self = static_cast<Http2Session*>(h->data)) {
      self->flush_scheduled_ = false;
      self->send();
    }
  });
}

void Http2Session::send() {
  if (in_nghttp2_) {
    send_due_ = true;
    return;
  }
  net::Stream* client = conn_.client();
  do {
    send_due_ = false;
    while (!finished_ && !client->closing() && !client->out().above_high_water()) {
      wire_.clear();
      in_nghttp2_ = true;
      while (wire_.size() < kGatherBytes) {
        const uint8_t* frames = nullptr;
        const ssize_t n = nghttp2_session_mem_send(session_, &frames);
        if (n <= 0) break;
        wire_.append(reinterpret_cast<const char*>(frames), static_cast<size_t>(n));
      }
      in_nghttp2_ = false;
      if (wire_.empty()) break;
      client->write(wire_);
    }
  } while (send_due_ && !finished_ && !client->closing());
  if (!finished_ && !client->closing() && !nghttp2_session_want_read(session_) && !nghttp2_session_want_write(session_)) {
    finish();
  }
  conn_.refresh_deadline(ClientConnection::Refresh::kIfChanged);
}

void Http2Session::finish() {
  finished_ = true;
  // The GOAWAY and the last frames leave, then a half-close; the client closes in answer.
  conn_.client()->shutdown_after_writes();
}

DeadlineSpec Http2Session::deadline() const {
  const auto& l = *conn_.listener().config;
  if (finished_) return {Deadline::kLinger, kLingerMs};
  if (conn_.client()->pending() > net::OutQueue::kHighWater) return {Deadline::kClientSend, to_ms(l.send_timeout)};
  if (!streams_.empty()) return {};  // each stream keeps its own time
  return served_one_ ? DeadlineSpec{Deadline::kKeepAlive, to_ms(l.keepalive_timeout)}
                     : DeadlineSpec{Deadline::kRequestHead, to_ms(l.header_timeout)};
}

void Http2Session::on_deadline(Deadline kind) {
  if (kind == Deadline::kKeepAlive || kind == Deadline::kRequestHead) {
    go_away();
    return;
  }
  if (kind == Deadline::kClientSend) {
    LOG_INFO("client %s read none of its HTTP/2 frames within send_timeout", conn_.client_ip().data());
  }
  abort();
  conn_.close();
}

void Http2Session::begin_shutdown() {
  close_tunnels_cleanly(Tunnel::kCloseGoingAway, conn_.worker()->close_delay_ms());
}

void Http2Session::go_away() {
  if (!going_away_) {
    going_away_ = true;
    nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                          NGHTTP2_NO_ERROR, nullptr, 0);
  }
  send();
}

void Http2Session::drain_tunnels_to(const std::vector<uint32_t>& backend_ids) {
  for (auto& [id, stream] : streams_) {
    Tunnel* tunnel = stream->tunnel();
    if (tunnel != nullptr && std::find(backend_ids.begin(), backend_ids.end(), tunnel->backend_id()) != backend_ids.end()) {
      tunnel->close_cleanly(Tunnel::kCloseServiceRestart, conn_.worker()->close_delay_ms());
    }
  }
}

void Http2Session::close_tunnels_cleanly(uint16_t code, uint64_t delay_ms) {
  for (auto& [id, stream] : streams_) {
    if (Tunnel* tunnel = stream->tunnel()) tunnel->close_cleanly(code, delay_ms);
  }
  // Going away (a shutdown, or the hand-over to a new binary): no new stream on this connection,
  // so the client opens its next one to whoever accepts now.
  if (code == Tunnel::kCloseGoingAway) go_away();
}

void Http2Session::abort() {
  for (auto& [id, stream] : streams_) stream->abort();
}

// ---------------------------------------------------------------------------------------------
// nghttp2 callbacks

int Http2Session::on_begin_headers_cb(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  self->served_one_ = true;
  self->streams_.emplace(frame->hd.stream_id, std::make_unique<Http2Stream>(*self, frame->hd.stream_id));
  return 0;
}

int Http2Session::on_header_cb(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name, size_t namelen,
                               const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: dropped
  if (Http2Stream* stream = self->find(frame->hd.stream_id)) {
    stream->add_field(as_view(name, namelen), as_view(value, valuelen));
  }
  return 0;
}

int Http2Session::on_frame_recv_cb(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  Http2Stream* stream = self->find(frame->hd.stream_id);
  if (stream == nullptr) return 0;
  const bool end_stream = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
    WorkerContext& worker = *self->conn_.worker();
    if (worker.shutting_down || worker.close_after_response) self->go_away();  // this one is served
    stream->on_request_head(end_stream);
  } else if (end_stream && (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS)) {
    stream->on_request_end();
  }
  return 0;
}

int Http2Session::on_data_chunk_recv_cb(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                                        size_t len, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  if (Http2Stream* stream = self->find(stream_id)) {
    stream->on_request_data(as_view(data, len));
  } else {
    nghttp2_session_consume(self->session_, stream_id, len);
  }
  return 0;
}

int Http2Session::on_frame_send_cb(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  if (frame->hd.type == NGHTTP2_GOAWAY && frame->goaway.error_code != NGHTTP2_NO_ERROR) {
    // A protocol error or a flood limit (rapid reset, CONTINUATION, SETTINGS, queued ACKs).
    LOG_INFO("HTTP/2 from %s: connection ended with GOAWAY %s", self->conn_.client_ip().data(),
             nghttp2_http2_strerror(frame->goaway.error_code));
  }
  const bool ends = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  if (ends && (frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS)) {
    if (Http2Stream* stream = self->find(frame->hd.stream_id)) stream->on_end_stream_sent();
  }
  return 0;
}

int Http2Session::on_stream_close_cb(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
  auto* self = static_cast<Http2Session*>(user);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end()) return 0;
  it->second->on_closed(error_code);
  // Its exchange may be on the call stack (a response's last frame went out from inside it).
  self->conn_.worker()->graveyard.bury(std::move(it->second));
  self->streams_.erase(it);
  return 0;
}

}  // namespace limpet::proxy
