// Upstream::build and Upstream::route: order of precedence (affinity → cookie → hash →
// placement), backend state handling at each step, session hooks, sticky cookie.
#include "limpet/balancer/upstream.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <deque>
#include <set>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/ring.hpp"

namespace limpet::balancer {
namespace {

config::BackendConfig backend(std::string name, std::string host, uint16_t port, uint32_t weight = 1) {
  config::BackendConfig b;
  b.name = std::move(name);
  b.address.host = std::move(host);
  b.address.port = port;
  b.address.text = b.address.host + ":" + std::to_string(port);
  b.weight = weight;
  return b;
}

class UpstreamTest : public ::testing::Test {
 protected:
  UpstreamTest() {
    cfg_.name = "app";
    cfg_.backends = {backend("a", "127.0.0.1", 9001), backend("b", "::1", 9002), backend("c", "localhost", 9003)};
    cfg_.sticky_cookie.enabled = true;
    config::HashKeySource room;
    room.kind = config::HashKeySource::Kind::kQuery;
    room.name = "room";
    cfg_.hash_keys = {room};
    cfg_.session_ttl = std::chrono::milliseconds(50000);
    affinity_ = std::make_shared<AffinityTable>(registry_, 0, clock_);
  }

  const Upstream& up() {
    if (!upstream_) {
      auto built = Upstream::build(cfg_, registry_, affinity_, clock_);
      EXPECT_TRUE(built.is_ok()) << (built.is_ok() ? "" : built.message());
      upstream_ = *built;
    }
    return *upstream_;
  }
  BackendState& state(int i) { return *up().backends()[static_cast<size_t>(i)].state; }

  Route route(std::string_view path, std::string_view query, std::vector<http::Header> headers = {},
              std::span<const int> exclude = {}, uint64_t random = 1) {
    http::RequestHead h;
    h.method = "GET";
    h.path = path;
    h.query = query;
    h.target = path;
    h.headers = std::move(headers);
    return up().route({h, "192.0.2.10", exclude, random});
  }

  // Cookie header text must outlive the request that points at it.
  http::Header cookie_for(int i) {
    cookies_.push_back(cfg_.sticky_cookie.name + "=" + up().backends()[static_cast<size_t>(i)].cookie_token);
    return {"Cookie", cookies_.back()};
  }

  config::UpstreamConfig cfg_;
  BackendRegistry registry_;
  ManualClock clock_{5000};
  std::shared_ptr<AffinityTable> affinity_;
  std::shared_ptr<const Upstream> upstream_;
  std::deque<std::string> cookies_;
};

TEST_F(UpstreamTest, BuildResolvesAddressesAndTokens) {
  const auto& b = up().backends();
  ASSERT_EQ(b.size(), 3u);
  const auto* v4 = reinterpret_cast<const sockaddr_in*>(&b[0].addr);
  EXPECT_EQ(v4->sin_family, AF_INET);
  EXPECT_EQ(ntohs(v4->sin_port), 9001);
  EXPECT_EQ(b[0].addr_len, sizeof(sockaddr_in));
  const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&b[1].addr);
  EXPECT_EQ(v6->sin6_family, AF_INET6);
  EXPECT_EQ(ntohs(v6->sin6_port), 9002);
  EXPECT_EQ(b[1].addr_len, sizeof(sockaddr_in6));
  const auto* local = reinterpret_cast<const sockaddr_in*>(&b[2].addr);
  EXPECT_EQ(local->sin_addr.s_addr, htonl(INADDR_LOOPBACK));
  std::set<std::string> tokens;
  for (const auto& x : b) {
    EXPECT_EQ(x.cookie_token.size(), 16u);
    EXPECT_EQ(x.cookie_token.find_first_not_of("0123456789abcdef"), std::string::npos);
    tokens.insert(x.cookie_token);
    EXPECT_EQ(x.state->name, x.config->name);
  }
  EXPECT_EQ(tokens.size(), 3u);
  EXPECT_EQ(up().ring().size(), 3u);
  EXPECT_EQ(up().index_of_state(b[2].state->id), 2);
  EXPECT_EQ(up().index_of_token(b[1].cookie_token), 1);
  EXPECT_EQ(up().index_of_token("nope"), -1);
}

TEST_F(UpstreamTest, TokensAndRingDependOnNamesOnly) {
  const std::string token_a = up().backends()[0].cookie_token;
  std::vector<int> picks;
  for (int r = 0; r < 200; ++r) picks.push_back(route("/", "room=" + std::to_string(r)).backend);
  // Renumber every port and reverse the order: same tokens, same backends by name.
  config::UpstreamConfig moved = cfg_;
  moved.backends = {backend("c", "10.0.0.3", 1), backend("b", "10.0.0.2", 2), backend("a", "10.0.0.1", 3)};
  auto other = Upstream::build(moved, registry_, affinity_, clock_);
  ASSERT_TRUE(other.is_ok());
  EXPECT_EQ((*other)->backends()[2].cookie_token, token_a);
  for (int r = 0; r < 200; ++r) {
    http::RequestHead h;
    h.path = "/";
    const std::string q = "room=" + std::to_string(r);
    h.query = q;
    const int i = (*other)->route({h, "192.0.2.10", {}, 1}).backend;
    ASSERT_EQ((*other)->backends()[static_cast<size_t>(i)].config->name,
              up().backends()[static_cast<size_t>(picks[static_cast<size_t>(r)])].config->name);
  }
}

TEST_F(UpstreamTest, BuildFailures) {
  config::UpstreamConfig bad = cfg_;
  bad.backends.push_back(backend("d", "example.com", 80));
  EXPECT_FALSE(Upstream::build(bad, registry_, affinity_, clock_).is_ok());
  bad = cfg_;
  bad.backends.clear();
  EXPECT_FALSE(Upstream::build(bad, registry_, affinity_, clock_).is_ok());
  bad = cfg_;
  bad.ring_size = 65536;
  EXPECT_FALSE(Upstream::build(bad, registry_, affinity_, clock_).is_ok());
  bad = cfg_;
  bad.trusted_proxies = {"10.0.0.0/99"};
  EXPECT_FALSE(Upstream::build(bad, registry_, affinity_, clock_).is_ok());
  bad = cfg_;
  bad.ring = config::RingKind::kRendezvous;
  bad.ring_size = 4;  // irrelevant without a table
  EXPECT_TRUE(Upstream::build(bad, registry_, nullptr, clock_).is_ok());
}

TEST_F(UpstreamTest, ReasonNames) {
  EXPECT_STREQ(to_string(RouteReason::kAffinity), "affinity");
  EXPECT_STREQ(to_string(RouteReason::kCookie), "cookie");
  EXPECT_STREQ(to_string(RouteReason::kHash), "hash");
  EXPECT_STREQ(to_string(RouteReason::kPlacement), "placement");
  EXPECT_STREQ(to_string(RouteReason::kNone), "none");
}

TEST_F(UpstreamTest, HandshakeIsPlacedAndFlagged) {
  Route r = route("/socket.io/", "EIO=4&transport=polling&t=abc");
  EXPECT_GE(r.backend, 0);
  EXPECT_EQ(r.reason, RouteReason::kPlacement);
  EXPECT_TRUE(r.engineio);
  EXPECT_TRUE(r.handshake);
  EXPECT_TRUE(r.session_id.empty());
  EXPECT_TRUE(r.set_cookie);
  Route plain = route("/api", "sid=abc");
  EXPECT_FALSE(plain.engineio);
  EXPECT_FALSE(plain.handshake);
  EXPECT_TRUE(plain.session_id.empty());  // a sid off the Engine.IO path means nothing
  // The client bundle under the Engine.IO path is a file, not a handshake (issue 16).
  Route bundle = route("/socket.io/socket.io.js", "");
  EXPECT_TRUE(bundle.engineio);
  EXPECT_FALSE(bundle.handshake);
  EXPECT_FALSE(route("/socket.io/socket.io.min.js", "v=4.8.1").handshake);
}

// A burst of handshakes arrives before any sid is learned: each placed one is marked as a new
// session, which the proxy counts in `placing` at once (its BackendLease), so the burst spreads
// evenly instead of herding onto whichever node looked emptiest.
TEST_F(UpstreamTest, HandshakesOnTheirWayCountForPlacement) {
  std::vector<int> per_backend(3);
  for (int k = 0; k < 30; ++k) {
    const Route r = route("/socket.io/", "EIO=4&transport=polling", {}, {}, static_cast<uint64_t>(k % 2));
    ASSERT_EQ(r.reason, RouteReason::kPlacement);
    ASSERT_TRUE(r.new_session);
    state(r.backend).placing.fetch_add(1);  // what the lease does
    ++per_backend[static_cast<size_t>(r.backend)];
  }
  EXPECT_EQ(per_backend, (std::vector<int>{10, 10, 10}));
  // Learning a sid adds the session; the lease, not the table, takes the placing count back.
  up().learn_session("SID-A", 0);
  EXPECT_EQ(state(0).placing.load(), 10);
  EXPECT_EQ(state(0).sessions.load(), 1);
  // Requests with a sid, and plain requests, open no session.
  EXPECT_FALSE(route("/socket.io/", "EIO=4&transport=polling&sid=SID-A").new_session);
  EXPECT_FALSE(route("/other", "").new_session);
}

TEST_F(UpstreamTest, LearnedSessionGoesBackToItsBackend) {
  up().learn_session("SID1", 1);
  EXPECT_EQ(state(1).sessions.load(), 1);
  for (int k = 0; k < 20; ++k) {
    Route r = route("/socket.io/", "EIO=4&transport=polling&sid=SID1", {}, {}, static_cast<uint64_t>(k));
    EXPECT_EQ(r.backend, 1);
    EXPECT_EQ(r.reason, RouteReason::kAffinity);
    EXPECT_EQ(r.session_id, "SID1");
    EXPECT_FALSE(r.handshake);
  }
  // The WebSocket upgrade GET carries the sid too.
  EXPECT_EQ(route("/socket.io/", "EIO=4&transport=websocket&sid=SID1").backend, 1);
  // The lookups refreshed the deadline.
  clock_.advance(40000);
  EXPECT_EQ(route("/socket.io/", "EIO=4&sid=SID1").reason, RouteReason::kAffinity);
  clock_.advance(40000);
  EXPECT_EQ(route("/socket.io/", "EIO=4&sid=SID1").reason, RouteReason::kAffinity);
  clock_.advance(50000);
  Route gone = route("/socket.io/", "EIO=4&sid=SID1");
  EXPECT_NE(gone.reason, RouteReason::kAffinity);
  EXPECT_EQ(gone.session_id, "SID1");  // still a sid request: never retried once sent
}

TEST_F(UpstreamTest, AffinityBeatsCookieAndHash) {
  up().learn_session("S", 1);
  Route r = route("/socket.io/", "EIO=4&sid=S&room=1", {cookie_for(2)});
  EXPECT_EQ(r.backend, 1);
  EXPECT_EQ(r.reason, RouteReason::kAffinity);
  EXPECT_TRUE(r.set_cookie);  // the cookie names another backend: re-point it
}

TEST_F(UpstreamTest, DrainingKeepsSessionsDownDropsThem) {
  up().learn_session("S", 1);
  state(1).draining = true;
  EXPECT_EQ(route("/socket.io/", "EIO=4&sid=S").reason, RouteReason::kAffinity);
  // New sessions avoid a draining backend.
  for (int k = 0; k < 30; ++k) EXPECT_NE(route("/socket.io/", "EIO=4", {}, {}, static_cast<uint64_t>(k)).backend, 1);
  state(1).draining = false;
  state(1).up = false;
  Route r = route("/socket.io/", "EIO=4&sid=S");
  EXPECT_NE(r.backend, 1);
  EXPECT_GE(r.backend, 0);
  EXPECT_EQ(r.reason, RouteReason::kPlacement);
  EXPECT_EQ(affinity_->size(), 0u);  // dropped, and its session count with it
  EXPECT_EQ(state(1).sessions.load(), 0);
  state(1).up = true;
  EXPECT_EQ(route("/socket.io/", "EIO=4&sid=S").reason, RouteReason::kPlacement);  // stays forgotten
}

TEST_F(UpstreamTest, ExcludedAffinityBackendIsNotReturnedButKept) {
  up().learn_session("S", 0);
  const int tried = 0;
  Route r = route("/socket.io/", "EIO=4&sid=S", {}, std::span<const int>(&tried, 1));
  EXPECT_NE(r.backend, 0);
  EXPECT_EQ(affinity_->size(), 1u);
}

TEST_F(UpstreamTest, StickyCookie) {
  Route r = route("/app", "", {cookie_for(2)});
  EXPECT_EQ(r.backend, 2);
  EXPECT_EQ(r.reason, RouteReason::kCookie);
  EXPECT_FALSE(r.set_cookie);
  // Draining: a cookie is a known session, it still goes there.
  state(2).draining = true;
  EXPECT_EQ(route("/app", "", {cookie_for(2)}).reason, RouteReason::kCookie);
  // Down: placed elsewhere, and the cookie is re-pointed.
  state(2).up = false;
  Route moved = route("/app", "", {cookie_for(2)});
  EXPECT_NE(moved.backend, 2);
  EXPECT_EQ(moved.reason, RouteReason::kPlacement);
  EXPECT_TRUE(moved.set_cookie);
  // Unknown token: ignored.
  cookies_.push_back("limpet_backend=0123456789abcdef");
  EXPECT_EQ(route("/app", "", {{"Cookie", cookies_.back()}}).reason, RouteReason::kPlacement);
  // Cookie beats hash.
  state(2).up = true;
  EXPECT_EQ(route("/app", "room=1", {cookie_for(2)}).reason, RouteReason::kCookie);
}

TEST_F(UpstreamTest, CookieDisabledIsIgnored) {
  cfg_.sticky_cookie.enabled = false;
  Route r = route("/app", "", {{"Cookie", "limpet_backend=whatever"}});
  EXPECT_EQ(r.reason, RouteReason::kPlacement);
  EXPECT_FALSE(r.set_cookie);
}

TEST_F(UpstreamTest, StickyCookieValue) {
  cfg_.sticky_cookie.max_age = std::chrono::milliseconds(3600 * 1000);
  cfg_.sticky_cookie.secure = true;
  const std::string v = up().sticky_cookie_value(1);
  EXPECT_EQ(v, "limpet_backend=" + up().backends()[1].cookie_token + "; Path=/; Max-Age=3600; Secure; HttpOnly");
  EXPECT_EQ(up().sticky_cookie_value(7), "");
}

TEST_F(UpstreamTest, HashKeyConsistentAndSkipsUnavailable) {
  std::vector<int> counts(3);
  std::vector<int> first(300);
  for (int k = 0; k < 300; ++k) {
    Route r = route("/", "room=" + std::to_string(k));
    ASSERT_EQ(r.reason, RouteReason::kHash);
    first[static_cast<size_t>(k)] = r.backend;
    ++counts[static_cast<size_t>(r.backend)];
    ASSERT_EQ(route("/", "room=" + std::to_string(k), {}, {}, 999).backend, r.backend);  // randomness unused
  }
  for (int c : counts) EXPECT_GT(c, 60);
  // Draining (no new sessions) or excluded: only that backend's keys move.
  state(0).draining = true;
  const int excluded_one = 1;
  for (int k = 0; k < 300; ++k) {
    const int before = first[static_cast<size_t>(k)];
    const int now = route("/", "room=" + std::to_string(k)).backend;
    if (before != 0) {
      ASSERT_EQ(now, before);
    } else {
      ASSERT_NE(now, 0);
    }
    const int ex = route("/", "room=" + std::to_string(k), {}, std::span<const int>(&excluded_one, 1)).backend;
    ASSERT_EQ(ex, 2);
  }
}

TEST_F(UpstreamTest, HashKeyOnEngineIoHandshake) {
  // Everyone in a room lands on the same backend, handshake included.
  const int b = route("/socket.io/", "EIO=4&transport=polling&room=lobby").backend;
  for (int k = 0; k < 10; ++k) {
    Route r = route("/socket.io/", "EIO=4&transport=polling&room=lobby", {}, {}, static_cast<uint64_t>(k));
    EXPECT_EQ(r.backend, b);
    EXPECT_EQ(r.reason, RouteReason::kHash);
    EXPECT_TRUE(r.handshake);
  }
}

TEST_F(UpstreamTest, BoundedLoadMovesHashedKeysOffAnOverloadedBackend) {
  cfg_.balance_factor = 1.25;
  const int home = route("/", "room=hot").backend;
  state(home).sessions = 1000;
  Route r = route("/", "room=hot");
  EXPECT_NE(r.backend, home);
  EXPECT_EQ(r.reason, RouteReason::kHash);
  state(home).sessions = 0;
}

TEST_F(UpstreamTest, IpKeyWithTrustedProxy) {
  config::HashKeySource ip;
  ip.kind = config::HashKeySource::Kind::kIp;
  cfg_.hash_keys = {ip};
  cfg_.trusted_proxies = {"192.0.2.0/24"};
  // The peer (192.0.2.10) is trusted: the client is the X-Forwarded-For hop.
  std::set<int> seen;
  std::vector<std::string> xff;
  for (int k = 0; k < 60; ++k) xff.push_back("198.51.100." + std::to_string(k));
  for (int k = 0; k < 60; ++k) {
    Route r = route("/", "", {{"X-Forwarded-For", xff[static_cast<size_t>(k)]}});
    EXPECT_EQ(r.reason, RouteReason::kHash);
    EXPECT_EQ(route("/", "", {{"X-Forwarded-For", xff[static_cast<size_t>(k)]}}).backend, r.backend);
    seen.insert(r.backend);
  }
  EXPECT_EQ(seen.size(), 3u);
}

TEST_F(UpstreamTest, NothingUsable) {
  for (int i = 0; i < 3; ++i) state(i).up = false;
  Route r = route("/socket.io/", "EIO=4&room=1");
  EXPECT_EQ(r.backend, -1);
  EXPECT_EQ(r.reason, RouteReason::kNone);
  EXPECT_FALSE(r.set_cookie);
}

TEST_F(UpstreamTest, ExcludeIsNeverReturned) {
  const int tried[] = {0, 2};
  for (int k = 0; k < 50; ++k) {
    EXPECT_EQ(route("/socket.io/", "EIO=4", {}, tried, static_cast<uint64_t>(k)).backend, 1);
    EXPECT_EQ(route("/", "room=" + std::to_string(k), {}, tried).backend, 1);
  }
  const int all[] = {0, 1, 2};
  EXPECT_EQ(route("/", "room=1", {}, all).backend, -1);
}

TEST_F(UpstreamTest, SessionHooks) {
  up().learn_session("X", 2);
  up().learn_session("", 2);   // ignored
  up().learn_session("Y", 9);  // out of range: ignored
  up().learn_session("Z", -1);
  EXPECT_EQ(affinity_->size(), 1u);
  up().forget_session("X");
  EXPECT_EQ(affinity_->size(), 0u);
  EXPECT_EQ(state(2).sessions.load(), 0);
  up().note_unparsable_handshake();
  EXPECT_EQ(affinity_->stats().unparsable_handshakes, 1u);
}

TEST_F(UpstreamTest, PlacementSpreadsNewSessionsFromOneIp) {
  cfg_.hash_keys.clear();
  std::vector<int> counts(3);
  for (int k = 0; k < 300; ++k) {
    Route r = route("/socket.io/", "EIO=4&transport=polling", {}, {}, static_cast<uint64_t>(k) * 2654435761u);
    ASSERT_EQ(r.reason, RouteReason::kPlacement);
    ++counts[static_cast<size_t>(r.backend)];
    up().learn_session("sid" + std::to_string(k), r.backend);
  }
  EXPECT_EQ(counts, (std::vector<int>{100, 100, 100}));
}

TEST_F(UpstreamTest, AffinitySurvivesRebuild) {
  up().learn_session("S", 2);  // backend "c"
  config::UpstreamConfig next = cfg_;
  next.backends = {backend("c", "127.0.0.1", 9103), backend("a", "127.0.0.1", 9101)};  // b removed, reordered
  auto rebuilt = Upstream::build(next, registry_, affinity_, clock_);
  ASSERT_TRUE(rebuilt.is_ok());
  http::RequestHead h;
  h.path = "/socket.io/";
  h.query = "EIO=4&sid=S";
  Route r = (*rebuilt)->route({h, "192.0.2.10", {}, 1});
  EXPECT_EQ(r.reason, RouteReason::kAffinity);
  EXPECT_EQ((*rebuilt)->backends()[static_cast<size_t>(r.backend)].config->name, "c");
}

}  // namespace
}  // namespace limpet::balancer
