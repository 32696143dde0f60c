// Golden values for what limpet instances behind one L4 balancer, and limpet across versions,
// must agree on: the string hash (XXH3_64bits_withSeed with the seeds of balancer/hash.hpp), the
// sticky-cookie token of a backend name, and the backend a hash key lands on for a fixed member
// list on either ring. A failure here means keys or cookies would move on upgrade: if the change
// is deliberate, it remaps every hashed key and every cookie, and the release notes must say so.
#include <gtest/gtest.h>

#include <cinttypes>
#include <cstdio>
#include <deque>
#include <string>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/hash.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/util/clock.hpp"

namespace limpet::balancer {
namespace {

TEST(Golden, StringHashIsXxh3WithSeed) {
  // XXH3_64bits of the empty input, seed 0: the value published with xxHash.
  EXPECT_EQ(hash64(""), 0x2d06800538d394c2ULL);
  // Every XXH3 length class (0, 1-3, 4-8, 9-16, 17-128, 129-240, >240), with routing's seeds.
  EXPECT_EQ(hash64("", seed::kKey), 0xd327c8fd1c2d852eULL);
  EXPECT_EQ(hash64("a", seed::kKey), 0xa3a48fa9e4bf0461ULL);
  EXPECT_EQ(hash64("room-42", seed::kKey), 0xf3a92c3949277df2ULL);
  EXPECT_EQ(hash64("tenant-0001", seed::kKey), 0x59fb2e3559174264ULL);
  EXPECT_EQ(hash64("lv_VI97HAXpY6yYWAAAC", seed::kSid), 0x38f94a07db159a99ULL);
  EXPECT_EQ(hash64(std::string(200, 'x'), seed::kKey), 0xca64261e2e301b1bULL);
  EXPECT_EQ(hash64(std::string(1000, 'y'), seed::kKey), 0x43b3a2b50d8b4f8fULL);
  EXPECT_EQ(hash64("node-1", seed::kName), 0x0161226d779693a3ULL);
  EXPECT_EQ(hash64("node-1", seed::kOffset), 0x93cabcb6f3e2d0d1ULL);
  EXPECT_EQ(hash64("node-1", seed::kSkip), 0xad4da914929413ccULL);
}

config::BackendConfig backend(const std::string& name, uint16_t port, uint32_t weight = 1) {
  config::BackendConfig b;
  b.name = name;
  b.address.host = "127.0.0.1";
  b.address.port = port;
  b.address.text = "127.0.0.1:" + std::to_string(port);
  b.weight = weight;
  return b;
}

// Five backends, one of weight 3, hashing query:room, on the given ring.
class GoldenRouting : public ::testing::Test {
 protected:
  static std::vector<config::BackendConfig> five() {
    std::vector<config::BackendConfig> out;
    for (int i = 1; i <= 5; ++i) out.push_back(backend("node-" + std::to_string(i), 9000, i == 4 ? 3 : 1));
    return out;
  }

  std::shared_ptr<const Upstream> build(config::RingKind ring, std::vector<config::BackendConfig> backends = five()) {
    config::UpstreamConfig& cfg = configs_.emplace_back();  // an Upstream points into its config
    cfg.name = "app";
    cfg.ring = ring;
    cfg.backends = std::move(backends);
    config::HashKeySource room;
    room.kind = config::HashKeySource::Kind::kQuery;
    room.name = "room";
    cfg.hash_keys = {room};
    auto built = Upstream::build(cfg, registry_, nullptr, clock_);
    EXPECT_TRUE(built.is_ok()) << (built.is_ok() ? "" : built.message());
    return built.is_ok() ? *built : nullptr;
  }

  // The backend names rooms 1..20 land on.
  static std::string landing(const Upstream& u) {
    std::string out;
    for (int r = 1; r <= 20; ++r) {
      http::RequestHead h;
      h.method = "GET";
      h.path = "/";
      const std::string q = "room=" + std::to_string(r);
      h.query = q;
      h.target = "/?" + q;
      const Route route = u.route({h, "192.0.2.1", {}, 1});
      EXPECT_EQ(route.reason, RouteReason::kHash);
      if (!out.empty()) out += ' ';
      out += route.backend < 0 ? "-" : u.backends()[static_cast<size_t>(route.backend)].config->name.substr(5);
    }
    return out;
  }

  std::deque<config::UpstreamConfig> configs_;
  BackendRegistry registry_;
  ManualClock clock_;
};

TEST_F(GoldenRouting, CookieTokens) {
  auto u = build(config::RingKind::kMaglev);
  ASSERT_NE(u, nullptr);
  std::vector<std::string> tokens;
  for (const auto& b : u->backends()) tokens.push_back(b.cookie_token);
  EXPECT_EQ(tokens, (std::vector<std::string>{"e14f706d88561e53", "1eada7ccac9910f2", "860b68f955b4dca1",
                                              "011ce413e2768cd6", "5c920c5bf7aeafb3"}));
  // The token is the name's XXH3 with the cookie seed, as 16 hex digits.
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016" PRIx64, hash64("node-1", seed::kCookie));
  EXPECT_EQ(tokens[0], hex);
}

// Digits are the backend numbers ("3" is node-3) of rooms 1..20.
TEST_F(GoldenRouting, MaglevKeys) {
  auto u = build(config::RingKind::kMaglev);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(landing(*u), "4 2 5 1 3 5 2 4 3 4 4 1 1 4 3 4 2 3 2 1");
}

TEST_F(GoldenRouting, RendezvousKeys) {
  auto u = build(config::RingKind::kRendezvous);
  ASSERT_NE(u, nullptr);
  EXPECT_EQ(landing(*u), "4 4 4 4 4 4 4 3 1 4 4 3 2 1 3 4 4 4 1 3");
}

// The ring depends on names and weights only: other ports and another order land the same.
TEST_F(GoldenRouting, AddressesAndOrderDoNotMatter) {
  for (const auto ring : {config::RingKind::kMaglev, config::RingKind::kRendezvous}) {
    auto u = build(ring);
    auto moved = build(ring, {backend("node-5", 1), backend("node-3", 2), backend("node-1", 3),
                              backend("node-4", 4, 3), backend("node-2", 5)});
    ASSERT_NE(u, nullptr);
    ASSERT_NE(moved, nullptr);
    EXPECT_EQ(landing(*moved), landing(*u));
  }
}

}  // namespace
}  // namespace limpet::balancer
