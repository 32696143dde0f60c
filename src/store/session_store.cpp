#include "limpet/store/session_store.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <tuple>

#include "limpet/util/log.hpp"

namespace limpet::store {
namespace {

std::string decimal(int64_t v) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  (void)ec;
  return std::string(buf, end);
}

}  // namespace

const char* to_string(LookupResult r) {
  switch (r) {
    case LookupResult::kHit: return "hit";
    case LookupResult::kMiss: return "miss";
    case LookupResult::kNegative: return "negative_cached";
    case LookupResult::kShed: return "shed";
    case LookupResult::kUnavailable: return "unavailable";
    case LookupResult::kTimeout: return "timeout";
    case LookupResult::kError: return "error";
  }
  return "?";
}

const char* to_string(PublishResult r) {
  switch (r) {
    case PublishResult::kStored: return "stored";
    case PublishResult::kUnavailable: return "unavailable";
    case PublishResult::kTimeout: return "timeout";
    case PublishResult::kError: return "error";
  }
  return "?";
}

void StoreStats::connection_state(bool up, bool& counted_down, const std::string& where, const std::string& why,
                                  const std::string& address) {
  if (up) {
    if (!counted_down) return;
    counted_down = false;
    ever_up.store(true, std::memory_order_relaxed);
    if (connections_down.fetch_sub(1, std::memory_order_relaxed) == 1) {
      LOG_INFO("session store %s is up", address.c_str());
    }
    return;
  }
  connection_errors.fetch_add(1, std::memory_order_relaxed);
  if (counted_down) {  // never up yet
    if (!ever_up.load(std::memory_order_relaxed) && !told_unreachable.exchange(true)) {
      LOG_WARN("session store %s cannot be reached (%s: %s): routing on this instance's own table until it can",
               address.c_str(), where.c_str(), why.c_str());
    }
    return;
  }
  counted_down = true;
  if (connections_down.fetch_add(1, std::memory_order_relaxed) == 0) {
    LOG_WARN("session store %s is down (%s: %s): routing on this instance's own table until it is back",
             address.c_str(), where.c_str(), why.c_str());
  } else {
    LOG_DEBUG("session store %s: %s: %s", address.c_str(), where.c_str(), why.c_str());
  }
}

bool same_settings(const config::SessionStoreConfig& a, const config::SessionStoreConfig& b) {
  auto tie = [](const config::SessionStoreConfig& c) {
    return std::tie(c.enabled, c.address.text, c.username, c.password, c.database, c.key_prefix, c.connect_timeout,
                    c.store_timeout, c.lookup_timeout, c.instance, c.tls.enabled, c.tls.verify, c.tls.ca_file,
                    c.tls.server_name);
  };
  return tie(a) == tie(b);
}

RedisSettings StoreSetup::redis() const {
  RedisSettings s;
  auto addr = net::resolve_numeric(config.address.host, config.address.port);
  if (addr) s.address = *addr;
  s.address_config = config.address;
  s.username = config.username;
  s.password = config.password;
  s.database = config.database;
  s.connect_timeout_ms = static_cast<uint64_t>(config.connect_timeout.count());
  s.tls = tls.get();
  return s;
}

std::string StoreSetup::session_key(std::string_view upstream, std::string_view sid) const {
  std::string key;
  key.reserve(config.key_prefix.size() + 5 + upstream.size() + sid.size());
  key += config.key_prefix;
  key += "sid:";
  key += upstream;
  key += ':';
  key += sid;
  return key;
}

SessionStore::SessionStore(uv_loop_t* loop, BufferPool* buffers, std::shared_ptr<const StoreSetup> setup,
                           StoreStats* stats, tls::Counters* tls_counters, std::string where)
    : loop_(loop),
      setup_(std::move(setup)),
      stats_(stats),
      client_(loop, buffers, setup_->redis(), tls_counters,
              [stats, where, address = setup_->config.address.text,
               counted_down = true](bool up, const std::string& why) mutable {
                stats->connection_state(up, counted_down, where, why, address);
              }) {}

SessionStore::~SessionStore() { stop(); }

void SessionStore::start() {
  stats_->connections.fetch_add(1, std::memory_order_relaxed);
  stats_->connections_down.fetch_add(1, std::memory_order_relaxed);  // until its first ready
  client_.start();
}

void SessionStore::stop() {
  publishing_.clear();  // nobody is told: the callers are gone or going
  looking_up_.clear();
  client_.stop();
}

uint64_t SessionStore::lookup_timeout_ms() const {
  return static_cast<uint64_t>(setup_->config.lookup_timeout.count());
}

uint64_t SessionStore::max_wait_ms() const {
  return static_cast<uint64_t>(std::max(setup_->config.lookup_timeout, setup_->config.store_timeout).count());
}

void SessionStore::cancel(uint64_t ticket) {
  if (publishing_.erase(ticket) == 0) looking_up_.erase(ticket);
}

uint64_t SessionStore::publish(std::string_view upstream, std::string_view sid, std::string_view backend,
                               config::Millis ttl, Published done) {
  if (!client_.ready()) {
    count(PublishResult::kUnavailable);
    return 0;
  }
  const std::string key = setup_->session_key(upstream, sid);
  const std::string px = decimal(ttl.count());
  std::array<std::string_view, 5> argv{"SET", key, backend, "PX", px};
  const uint64_t ticket = next_ticket_++;
  const uint64_t started = uv_hrtime();
  const uint64_t sent = client_.send(argv, static_cast<uint64_t>(setup_->config.store_timeout.count()),
                                     [this, ticket, started](const Reply& r) {
    PublishResult result = PublishResult::kStored;
    if (r.type == Reply::Type::kTimeout) {
      result = PublishResult::kTimeout;
      if (!stats_->publish_incident.exchange(true)) {
        LOG_WARN("session store %s: a handshake response waited store_timeout (%lld ms) for the store and was "
                 "released unconfirmed; its session may be unknown to the other instances (logged once until "
                 "the store keeps up again)",
                 setup_->config.address.text.c_str(), static_cast<long long>(setup_->config.store_timeout.count()));
      }
    } else if (r.failed()) {
      result = PublishResult::kError;
    } else {
      stats_->latency.observe_us((uv_hrtime() - started) / 1000);
      stats_->publish_incident.store(false, std::memory_order_relaxed);
    }
    count(result);
    auto it = publishing_.find(ticket);
    if (it == publishing_.end()) return;  // the waiter was cancelled
    Published cb = std::move(it->second);
    publishing_.erase(it);
    cb(result);
  });
  if (sent == 0) {
    count(PublishResult::kUnavailable);
    return 0;
  }
  publishing_.emplace(ticket, std::move(done));
  return ticket;
}

bool SessionStore::negatively_cached(const std::string& key) {
  auto it = negative_.find(key);
  if (it == negative_.end()) return false;
  if (it->second > uv_now(loop_)) return true;
  negative_.erase(it);
  return false;
}

void SessionStore::remember_unknown(std::string key) {
  if (negative_.size() >= kMaxNegative) {
    const uint64_t now = uv_now(loop_);
    std::erase_if(negative_, [now](const auto& e) { return e.second <= now; });
    // Still full of live entries: a flood. Start over rather than grow; each sid it forgets
    // costs at most one more lookup.
    if (negative_.size() >= kMaxNegative) negative_.clear();
  }
  negative_.insert_or_assign(std::move(key), uv_now(loop_) + kNegativeTtlMs);
}

uint64_t SessionStore::lookup(std::string_view upstream, std::string_view sid, Found done) {
  std::string key = setup_->session_key(upstream, sid);
  if (!client_.ready()) {
    count(LookupResult::kUnavailable);
    return 0;
  }
  if (negatively_cached(key)) {
    count(LookupResult::kNegative);
    return 0;
  }
  if (lookups_in_flight_ >= kMaxLookupsInFlight) {
    count(LookupResult::kShed);
    return 0;
  }
  std::array<std::string_view, 2> argv{"GET", key};
  const uint64_t ticket = next_ticket_++;
  const uint64_t started = uv_hrtime();
  const uint64_t sent = client_.send(argv, lookup_timeout_ms(),
                                     [this, ticket, started, key](const Reply& r) mutable {
    --lookups_in_flight_;
    LookupResult result = LookupResult::kHit;
    if (r.type == Reply::Type::kTimeout) {
      result = LookupResult::kTimeout;
    } else if (r.type == Reply::Type::kNil) {
      result = LookupResult::kMiss;
      remember_unknown(std::move(key));
    } else if (r.type != Reply::Type::kString) {
      result = LookupResult::kError;
    }
    if (result == LookupResult::kHit || result == LookupResult::kMiss) {
      stats_->latency.observe_us((uv_hrtime() - started) / 1000);
    }
    count(result);
    auto it = looking_up_.find(ticket);
    if (it == looking_up_.end()) return;
    Found cb = std::move(it->second);
    looking_up_.erase(it);
    cb(result, result == LookupResult::kHit ? std::string_view(r.str) : std::string_view());
  });
  if (sent == 0) {
    count(LookupResult::kUnavailable);
    return 0;
  }
  ++lookups_in_flight_;
  looking_up_.emplace(ticket, std::move(done));
  return ticket;
}

void SessionStore::refresh(std::string_view upstream, std::string_view sid, config::Millis ttl) {
  const std::string key = setup_->session_key(upstream, sid);
  const std::string px = decimal(ttl.count());
  std::array<std::string_view, 3> argv{"PEXPIRE", key, px};
  if (client_.send(argv, 0, nullptr) != 0) stats_->refreshes.fetch_add(1, std::memory_order_relaxed);
}

void SessionStore::forget(std::string_view upstream, std::string_view sid) {
  const std::string key = setup_->session_key(upstream, sid);
  std::array<std::string_view, 2> argv{"DEL", key};
  if (client_.send(argv, 0, nullptr) != 0) stats_->deletes.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace limpet::store
