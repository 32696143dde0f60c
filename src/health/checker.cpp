#include "limpet/health/checker.hpp"

#include <random>

#include "limpet/http/parser.hpp"
#include "limpet/net/proxy_protocol.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/http/engineio.hpp"
#include "limpet/util/log.hpp"

namespace limpet::health {

namespace {

constexpr uint64_t kPassiveTickMs = 500;
constexpr size_t kMaxCheckBody = http::engineio::kMaxHandshakeBody;
// The first check of a new probe comes within this (spread, so a reload with many backends does
// not connect to all of them in the same millisecond), then every `interval`.
constexpr uint64_t kMaxFirstDelayMs = 500;

void close_timer(uv_timer_t* timer) {
  uv_close(reinterpret_cast<uv_handle_t*>(timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace

std::string check_request(const config::HealthCheck& check, std::string_view host) {
  std::string target = check.path;
  if (check.kind == config::HealthCheck::Kind::kEngineIo) {
    target += (target.find('?') == std::string::npos ? "?" : "&");
    target += "EIO=4&transport=polling";
  }
  std::string r = "GET " + target + " HTTP/1.1\r\nHost: ";
  r.append(host);
  r += "\r\nUser-Agent: limpet-health-check\r\nAccept: */*\r\n";
  // The Engine.IO check sends its close packet on the same connection.
  if (check.kind != config::HealthCheck::Kind::kEngineIo) r += "Connection: close\r\n";
  r += "\r\n";
  return r;
}

std::string engineio_close_request(const config::HealthCheck& check, std::string_view host, std::string_view sid) {
  std::string target = check.path;
  target += (target.find('?') == std::string::npos ? "?" : "&");
  target += "EIO=4&transport=polling&sid=";
  target.append(sid);
  std::string r = "POST " + target + " HTTP/1.1\r\nHost: ";
  r.append(host);
  // "1" is the Engine.IO close packet.
  r += "\r\nUser-Agent: limpet-health-check\r\nContent-Type: text/plain;charset=UTF-8\r\n"
       "Content-Length: 1\r\nConnection: close\r\n\r\n1";
  return r;
}

// Checks one backend: a timer fires every `interval`, each run opens a connection (through TLS
// when the upstream uses it), sends the check and judges the response. Owned by the Checker; a
// run in flight when the probe is destroyed is cut loose (delegate cleared, stream closed).
class Probe final : public net::StreamDelegate, public http::ParserDelegate {
 public:
  Probe(Checker* checker, const Target& target, size_t backend)
      : checker_(checker), timer_(new uv_timer_t) {
    retarget(target, backend);
    uv_timer_init(checker_->loop_, timer_);
    timer_->data = this;
    std::minstd_rand jitter(std::random_device{}());
    const uint64_t interval = static_cast<uint64_t>(check().interval.count());
    const uint64_t first = jitter() % std::min<uint64_t>(interval, kMaxFirstDelayMs);
    uv_timer_start(timer_, on_timer, first, interval);
  }

  ~Probe() override {
    abandon_run();
    close_timer(timer_);
  }

  // The backend is the same one under a new snapshot (its index may have changed).
  void retarget(const Target& target, size_t backend) {
    target_ = target;
    backend_ = backend;
  }
  const Target& target() const { return target_; }
  const balancer::RuntimeBackend& backend() const { return target_.upstream->backends()[backend_]; }
  const config::HealthCheck& check() const { return target_.upstream->config().health; }

 private:
  enum class Phase { kIdle, kConnecting, kChecking, kClosingSession };

  static void on_timer(uv_timer_t* t) { static_cast<Probe*>(t->data)->start_run(); }

  void start_run() {
    if (phase_ != Phase::kIdle) return;  // the previous run is still within its timeout
    phase_ = Phase::kConnecting;
    body_.clear();
    parser_.reset();
    stream_ = new net::Stream(checker_->loop_, &checker_->buffers_);
    stream_->set_delegate(this);
    if (target_.tls) stream_->set_filter(target_.tls->new_filter(*backend().config, &checker_->tls_counters_));
    stream_->set_timeout(static_cast<uint64_t>(check().timeout.count()));
    const int rc = stream_->connect(reinterpret_cast<const sockaddr*>(&backend().addr),
                                    [this](int status) { on_connected(status); }, proxy_preamble());
    if (rc != 0) on_connected(rc);
  }

  // A backend that expects PROXY headers refuses a connection without one: a probe sends the
  // header of a connection with no client behind it.
  std::string proxy_preamble() const {
    std::string header;
    const auto send = target_.upstream->config().send_proxy_protocol;
    if (send != config::SendProxyProtocol::kOff) {
      net::append_proxy_local_header(static_cast<net::ProxyVersion>(send), &header);
    }
    return header;
  }

  void on_connected(int status) {
    if (status != 0) return fail(std::string("connect: ") + uv_strerror(status));
    phase_ = Phase::kChecking;
    stream_->set_nodelay();
    stream_->start_reading();
    stream_->write(check_request(check(), backend().config->address.text));
  }

  // net::StreamDelegate
  void on_data(net::Stream*, std::string_view data) override {
    while (!data.empty() && stream_ != nullptr) {
      const http::Parser::Outcome out = parser_.execute(data);
      data.remove_prefix(out.consumed);
      if (out.state == http::Parser::State::kError) return fail("bad response: " + parser_.error_reason());
      if (out.state == http::Parser::State::kUpgrade) return fail("unexpected upgrade response");
      if (out.state != http::Parser::State::kPaused) return;
      parser_.resume();
    }
  }
  void on_end(net::Stream*, int status) override {
    if (phase_ == Phase::kClosingSession) return finish_run();
    fail(status == UV_EOF ? "connection closed before the response" : std::string("read: ") + uv_strerror(status));
  }
  void on_writable(net::Stream*) override {}
  void on_closed(net::Stream* s) override {
    if (s == stream_) stream_ = nullptr;
  }
  void on_timeout(net::Stream*) override {
    if (phase_ == Phase::kClosingSession) return finish_run();  // the verdict is in already
    fail("no answer within " + std::to_string(check().timeout.count()) + " ms");
  }

  // http::ParserDelegate
  bool on_head() override {
    if (phase_ != Phase::kChecking) return false;
    const int status = parser_.response().status;
    const config::HealthCheck& c = check();
    if (c.kind == config::HealthCheck::Kind::kHttp) {
      if (status >= c.status_min && status <= c.status_max) {
        record(true, "HTTP " + std::to_string(status));
        finish_run();
      } else {
        fail("HTTP " + std::to_string(status) + ", expected " + std::to_string(c.status_min) + "-" +
             std::to_string(c.status_max));
      }
    } else if (status != 200) {
      fail("Engine.IO handshake answered HTTP " + std::to_string(status));
    }
    return false;
  }
  bool on_body(std::string_view data) override {
    if (phase_ != Phase::kChecking) return true;
    body_.append(data.substr(0, kMaxCheckBody - std::min(body_.size(), kMaxCheckBody)));
    return true;
  }
  void on_message_end() override {
    if (phase_ == Phase::kClosingSession) return finish_run();
    if (phase_ != Phase::kChecking) return;
    http::engineio::HandshakeResult hs = http::engineio::parse_handshake(body_);
    if (hs.status != http::engineio::HandshakeStatus::kFound) return fail("no Engine.IO open packet in the response");
    record(true, "Engine.IO handshake");
    // End the session the check opened instead of leaving it to the node's ping timeout.
    if (stream_ != nullptr && parser_.response().keep_alive) {
      phase_ = Phase::kClosingSession;
      stream_->write(engineio_close_request(check(), backend().config->address.text, hs.sid));
    } else {
      finish_run();
    }
  }

  void fail(const std::string& detail) {
    record(false, detail);
    finish_run();
  }

  // Folds one result into the backend's state; a transition is logged with its reason.
  void record(bool ok, const std::string& detail) {
    const balancer::RuntimeBackend& b = backend();
    const config::HealthCheck& c = check();
    if (b.state->check_result(ok, detail, c.rise, c.fall, checker_->clock_.now_ms())) {
      const char* upstream = target_.upstream->config().name.c_str();
      if (ok) {
        LOG_INFO("backend %s (%s) of upstream %s is up: %d checks passed (%s)", b.config->name.c_str(),
                 b.config->address.text.c_str(), upstream, c.rise, detail.c_str());
      } else {
        LOG_WARN("backend %s (%s) of upstream %s is down: %d checks failed (last: %s)", b.config->name.c_str(),
                 b.config->address.text.c_str(), upstream, c.fall, detail.c_str());
      }
    } else if (!ok) {
      LOG_DEBUG("health check of backend %s failed: %s", b.config->name.c_str(), detail.c_str());
    }
  }

  void finish_run() {
    abandon_run();
    phase_ = Phase::kIdle;
  }

  void abandon_run() {
    if (stream_ != nullptr) {
      stream_->set_delegate(nullptr);
      stream_->close();
      stream_ = nullptr;
    }
  }

  Checker* checker_;
  Target target_;
  size_t backend_ = 0;
  uv_timer_t* timer_;  // heap: its close callback frees it after the probe is gone
  Phase phase_ = Phase::kIdle;
  net::Stream* stream_ = nullptr;  // self-deleting; only while a run is in flight
  http::Parser parser_{http::Parser::Kind::kResponse, http::ParserLimits{}, this};  // reset per run
  std::string body_;
};

Checker::Checker(uv_loop_t* loop, const Clock& clock) : loop_(loop), clock_(clock), passive_timer_(new uv_timer_t) {
  uv_timer_init(loop_, passive_timer_);
  passive_timer_->data = this;
  uv_timer_start(passive_timer_, on_passive_tick, kPassiveTickMs, kPassiveTickMs);
}

Checker::~Checker() { stop(); }

void Checker::update(const std::vector<Target>& targets) {
  std::map<std::string, std::unique_ptr<Probe>> kept;
  for (const Target& t : targets) {
    const config::UpstreamConfig& uc = t.upstream->config();
    if (uc.health.kind == config::HealthCheck::Kind::kNone) {
      release_unchecked(t);
      continue;
    }
    for (size_t i = 0; i < t.upstream->backends().size(); ++i) {
      const balancer::RuntimeBackend& b = t.upstream->backends()[i];
      if (b.retired) continue;  // leaving: its sessions end or move when the drain does
      const std::string key = uc.name + "/" + b.config->name;
      auto old = probes_.find(key);
      if (old != probes_.end()) {
        const Probe& p = *old->second;
        const bool same = p.backend().config->address.text == b.config->address.text &&
                          (p.target().tls != nullptr) == (t.tls != nullptr) && p.check() == uc.health;
        if (same) {
          old->second->retarget(t, i);
          kept.emplace(key, std::move(old->second));
          continue;
        }
      }
      kept.emplace(key, std::make_unique<Probe>(this, t, i));
    }
  }
  probes_ = std::move(kept);  // the probes left behind are destroyed: their runs are cut loose
  targets_ = targets;
}

void Checker::release_unchecked(const Target& target) {
  const int64_t now = clock_.now_ms();
  for (const balancer::RuntimeBackend& b : target.upstream->backends()) {
    if (b.state->checks_stopped(now)) {
      LOG_INFO("backend %s (%s) of upstream %s is up: health checks are off", b.config->name.c_str(),
               b.config->address.text.c_str(), target.upstream->config().name.c_str());
    }
  }
}

void Checker::stop() {
  probes_.clear();
  targets_.clear();
  if (passive_timer_ != nullptr) {
    close_timer(passive_timer_);
    passive_timer_ = nullptr;
  }
}

void Checker::on_passive_tick(uv_timer_t* timer) {
  auto* self = static_cast<Checker*>(timer->data);
  const int64_t now = self->clock_.now_ms();
  for (const Target& t : self->targets_) {
    const config::UpstreamConfig& uc = t.upstream->config();
    if (uc.health.kind != config::HealthCheck::Kind::kNone) continue;  // the probes decide
    for (const balancer::RuntimeBackend& b : t.upstream->backends()) {
      if (b.state->passive_retry_due(now, uc.health.fail_timeout.count())) {
        LOG_INFO("backend %s (%s) of upstream %s: fail_timeout passed, trying it again", b.config->name.c_str(),
                 b.config->address.text.c_str(), uc.name.c_str());
      }
    }
  }
}

}  // namespace limpet::health
