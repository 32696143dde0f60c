#include "limpet/balancer/upstream.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/hash.hpp"
#include "limpet/balancer/placement.hpp"
#include "limpet/balancer/ring.hpp"
#include "limpet/util/log.hpp"

namespace limpet::balancer {
namespace {

// Numeric hosts only: the config loader already refused names, so nothing here blocks on DNS.
bool resolve(const config::Address& a, sockaddr_storage* out, socklen_t* len) {
  std::string host = a.host;
  if (host == "localhost") host = "127.0.0.1";
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::memset(out, 0, sizeof *out);
  auto* v4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(a.port);
    *len = sizeof(sockaddr_in);
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(a.port);
    *len = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

// Opaque and stable: derived from the backend name only, so it survives reloads and port
// changes, is the same on every limpet instance and version, and does not reveal addresses.
// The 16 lowercase hex digits of XXH3_64bits_withSeed(name, seed::kCookie), most significant first.
std::string cookie_token_for(const std::string& name) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t h = hash64(name, seed::kCookie);
  std::string token(16, '0');
  for (int i = 15; i >= 0; --i, h >>= 4) token[static_cast<size_t>(i)] = kHex[h & 0xf];
  return token;
}

}  // namespace

const char* to_string(RouteReason reason) {
  switch (reason) {
    case RouteReason::kNone:
      return "none";
    case RouteReason::kAffinity:
      return "affinity";
    case RouteReason::kCookie:
      return "cookie";
    case RouteReason::kHash:
      return "hash";
    case RouteReason::kPlacement:
      return "placement";
  }
  return "none";
}

Upstream::~Upstream() = default;

Result<std::shared_ptr<const Upstream>> Upstream::build(const config::UpstreamConfig& cfg,
                                                        BackendRegistry& registry,
                                                        std::shared_ptr<AffinityTable> affinity,
                                                        const Clock& clock,
                                                        std::vector<config::BackendConfig> retired) {
  using R = Result<std::shared_ptr<const Upstream>>;
  const std::string where = "upstream \"" + cfg.name + "\": ";
  if (cfg.backends.empty()) return R::fail(where + "no backends");
  std::shared_ptr<Upstream> u(new Upstream());
  u->config_ = &cfg;
  u->clock_ = &clock;
  u->affinity_ = std::move(affinity);

  auto add_backend = [&](const config::BackendConfig& bc, bool is_retired) {
    RuntimeBackend b;
    b.config = &bc;
    b.retired = is_retired;
    if (!resolve(bc.address, &b.addr, &b.addr_len)) return false;
    b.state = registry.get_or_create(bc.name);
    b.cookie_token = cookie_token_for(bc.name);
    u->backends_.push_back(std::move(b));
    return true;
  };
  std::vector<RingMember> members;
  std::vector<Candidate> candidates;
  for (const auto& bc : cfg.backends) {
    if (!add_backend(bc, false)) {
      return R::fail(where + "backend \"" + bc.name + "\": address " + bc.address.text +
                     " is not a numeric IPv4/IPv6 address");
    }
    members.push_back({bc.name, bc.weight});
    candidates.push_back({u->backends_.back().state.get(), std::max<uint32_t>(bc.weight, 1)});
  }
  // After the ring members and placement candidates: indexes past them are never hashed to or placed on.
  for (auto& bc : retired) {
    u->retired_configs_.push_back(std::make_unique<const config::BackendConfig>(std::move(bc)));
    add_backend(*u->retired_configs_.back(), true);  // resolved when it was configured
  }

  auto ring = Ring::build(cfg.ring, std::move(members), cfg.ring_size);
  if (!ring) return R::fail(where + ring.message());
  u->ring_ = std::move(*ring);

  auto trusted = CidrSet::parse(cfg.trusted_proxies);
  if (!trusted) return R::fail(where + trusted.message());
  u->trusted_proxies_ = std::move(*trusted);

  u->placement_ = std::make_unique<Placement>(cfg.balance, std::move(candidates), cfg.balance_factor,
                                              cfg.health.slow_start.count(), clock);

  for (size_t i = 0; i < u->backends_.size(); ++i) {
    u->by_state_id_.emplace_back(u->backends_[i].state->id, static_cast<int>(i));
  }
  std::sort(u->by_state_id_.begin(), u->by_state_id_.end());
  return std::shared_ptr<const Upstream>(std::move(u));
}

int Upstream::index_of_state(uint32_t state_id) const {
  auto it = std::lower_bound(by_state_id_.begin(), by_state_id_.end(), std::make_pair(state_id, -1));
  return it != by_state_id_.end() && it->first == state_id ? it->second : -1;
}

int Upstream::index_of_token(std::string_view token) const {
  for (size_t i = 0; i < backends_.size(); ++i) {
    if (backends_[i].cookie_token == token) return static_cast<int>(i);
  }
  return -1;
}

bool Upstream::accepts_new(int i, std::span<const int> exclude) const {
  return backends_[static_cast<size_t>(i)].state->accepts_new() && !excluded(exclude, i);
}

void Upstream::route(const RouteInput& in, Route& r) const {
  const config::UpstreamConfig& cfg = *config_;
  r.backend = -1;
  r.reason = RouteReason::kNone;
  r.session_id.clear();
  r.handshake = false;
  r.set_cookie = false;
  r.new_session = false;
  r.sid_unknown = false;
  r.refresh_store = false;
  std::optional<std::string> cookie;
  auto finish = [&](int backend, RouteReason reason) {
    r.backend = backend;
    r.reason = backend >= 0 ? reason : RouteReason::kNone;
    // Set (or re-point) the cookie whenever it does not already name the chosen backend.
    r.set_cookie = cfg.sticky_cookie.enabled && backend >= 0 &&
                   (!cookie || *cookie != backends_[static_cast<size_t>(backend)].cookie_token);
  };

  // 1. Engine.IO session affinity.
  r.engineio = is_engineio_path(in.head.path, cfg.engineio_paths);
  // A handshake names the protocol version (EIO=4); a file under the path (the client bundle at
  // /socket.io/socket.io.js) is no handshake, and its response no unparsable one.
  if (r.engineio && !query_param_into(in.head.query, "sid", r.session_id)) {
    r.handshake = query_param(in.head.query, "EIO").has_value();
  }
  if (cfg.sticky_cookie.enabled) cookie = cookie_value(in.head, cfg.sticky_cookie.name);
  if (!r.session_id.empty() && affinity_) {
    auto id = affinity_->lookup(r.session_id, cfg.session_ttl, &r.refresh_store);
    r.sid_unknown = !id.has_value();
    if (id) {
      const int i = index_of_state(*id);
      // An id this upstream does not have belongs to a backend removed by a reload: a miss here,
      // and the entry ages out on its own.
      if (i >= 0) {
        const BackendState& state = *backends_[static_cast<size_t>(i)].state;
        // Draining is fine: known sessions keep going to a draining backend.
        if (state.usable() && !excluded(in.exclude, i)) return finish(i, RouteReason::kAffinity);
        // Down or disabled: the session cannot continue there. Drop it and place the request;
        // the new backend answers "Session ID unknown" and the client handshakes again.
        if (!state.usable()) affinity_->forget_if(r.session_id, *id);
      }
    }
  }

  // 2. Sticky cookie naming a backend that can still serve it.
  if (cookie) {
    const int i = index_of_token(*cookie);
    if (i >= 0 && backends_[static_cast<size_t>(i)].state->usable() && !excluded(in.exclude, i)) {
      return finish(i, RouteReason::kCookie);
    }
  }

  // 3. Consistent hash of the first present key.
  if (!cfg.hash_keys.empty()) {
    if (auto key = first_key(cfg.hash_keys, in.head, in.client_ip, trusted_proxies_)) {
      const uint64_t h = hash64(key->value, seed::kKey);
      const auto& cands = placement_->candidates();
      const LoadBound bound(cands, in.exclude, cfg.balance_factor);
      int i = ring_->lookup(h, [&](int j) {
        return accepts_new(j, in.exclude) && bound.allows(cands[static_cast<size_t>(j)]);
      });
      if (i < 0 && bound.bounded()) i = ring_->lookup(h, [&](int j) { return accepts_new(j, in.exclude); });
      if (i >= 0) return finish(i, RouteReason::kHash);
    }
  }

  // 4. Placement of a new session.
  const int placed = placement_->place(in.exclude, in.random);
  r.new_session = placed >= 0 && (r.handshake || in.head.websocket);
  return finish(placed, RouteReason::kPlacement);
}

void Upstream::learn_session(std::string_view session_id, int backend) const {
  if (!affinity_ || session_id.empty() || backend < 0 || static_cast<size_t>(backend) >= backends_.size()) return;
  BackendState& state = *backends_[static_cast<size_t>(backend)].state;
  affinity_->learn(session_id, state.id, config_->session_ttl);
}

bool Upstream::adopt_session(std::string_view session_id, std::string_view backend_name) const {
  if (!affinity_ || session_id.empty()) return false;
  for (const RuntimeBackend& b : backends_) {
    if (b.config->name != backend_name) continue;
    affinity_->learn(session_id, b.state->id, config_->session_ttl, AffinityTable::Origin::kStore);
    return true;
  }
  return false;
}

void Upstream::note_unparsable_handshake() const {
  if (affinity_) affinity_->note_unparsable_handshake();
}

void Upstream::forget_session(std::string_view session_id) const {
  if (affinity_ && !session_id.empty()) affinity_->forget(session_id);
}

void Upstream::report_failure(int backend, const char* what) const {
  if (backend < 0 || static_cast<size_t>(backend) >= backends_.size()) return;
  const RuntimeBackend& b = backends_[static_cast<size_t>(backend)];
  const config::HealthCheck& h = config_->health;
  if (b.state->passive_failure(clock_->now_ms(), h.max_fails, h.fail_timeout.count())) {
    LOG_WARN("backend %s (%s) of upstream %s is down: %u failures within %lld ms (last: %s)%s",
             b.config->name.c_str(), b.config->address.text.c_str(), config_->name.c_str(), h.max_fails,
             static_cast<long long>(h.fail_timeout.count()), what,
             h.kind == config::HealthCheck::Kind::kNone ? "; retried after fail_timeout" : "; health checks bring it back");
  }
}

void Upstream::report_new_session_failure(int backend, const char* what) const {
  if (backend < 0 || static_cast<size_t>(backend) >= backends_.size()) return;
  backends_[static_cast<size_t>(backend)].state->new_session_failed(clock_->now_ms(),
                                                                   config_->health.fail_timeout.count());
  report_failure(backend, what);
}

std::string Upstream::sticky_cookie_value(int backend) const {
  const config::StickyCookie& c = config_->sticky_cookie;
  if (backend < 0 || static_cast<size_t>(backend) >= backends_.size()) return {};
  std::string v = c.name + "=" + backends_[static_cast<size_t>(backend)].cookie_token;
  v += "; Path=" + (c.path.empty() ? std::string("/") : c.path);
  if (c.max_age.count() > 0) v += "; Max-Age=" + std::to_string((c.max_age.count() + 999) / 1000);
  if (c.secure) v += "; Secure";
  if (c.http_only) v += "; HttpOnly";
  return v;
}

}  // namespace limpet::balancer
