// ring_dump: prints, for 10 000 fixed keys, the backend each of a fixed set of upstream configs
// sends it to. "The ring is a pure function of the config" (design §5): the same config must give
// the same backend for every key in every process, on every instance and in every version, or
// instances behind one L4 balancer disagree and an upgrade re-homes every hashed session.
// ring_golden_test.py runs this in two differently set up processes, checks the outputs are
// byte-identical and that their sha256 is the one committed in ring_golden.txt.
//
// The keys are generated here from a local splitmix64, not from limpet's hash code, so that a
// change in limpet's hashing cannot change the inputs along with the outputs. Every route goes
// through Upstream::route (query:room → hash → ring → backend), the path a request takes; the
// "down" columns use Ring::lookup with an ineligible member, the order a key falls back along.
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "limpet/balancer/backend.hpp"
#include "limpet/balancer/hash.hpp"
#include "limpet/balancer/ring.hpp"
#include "limpet/balancer/upstream.hpp"
#include "limpet/config/config.hpp"
#include "limpet/http/message.hpp"
#include "limpet/util/clock.hpp"

namespace lb = limpet::balancer;
namespace cfg = limpet::config;

namespace {

constexpr int kKeys = 10000;

// splitmix64 (Steele, Lea, Flood 2014), written out here on purpose: see the header comment.
uint64_t splitmix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Key i: room names, tenant-like ids and 20-character base64url strings (what an Engine.IO sid
// or a user id looks like), in turn.
std::vector<std::string> make_keys() {
  static const char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::vector<std::string> keys;
  uint64_t state = 0x6b6579732d763031ULL;  // "keys-v01"
  for (int i = 0; i < kKeys; ++i) {
    const uint64_t r = splitmix(state);
    switch (i % 3) {
      case 0: keys.push_back(std::to_string(i / 3)); break;  // room=0, 1, 2, ...
      case 1: keys.push_back("tenant-" + std::to_string(r % 1000000)); break;
      default: {
        std::string s;
        uint64_t x = r;
        for (int c = 0; c < 20; ++c) {
          if (c == 10) x = splitmix(state);
          s += kB64[x & 63];
          x >>= 6;
        }
        keys.push_back(s);
      }
    }
  }
  return keys;
}

cfg::BackendConfig backend(const std::string& name, uint16_t port, uint32_t weight = 1) {
  cfg::BackendConfig b;
  b.name = name;
  b.address.host = "127.0.0.1";
  b.address.port = port;
  b.address.text = "127.0.0.1:" + std::to_string(port);
  b.weight = weight;
  return b;
}

struct Case {
  std::string label;
  cfg::RingKind ring;
  uint32_t ring_size;
  std::vector<cfg::BackendConfig> backends;
};

std::vector<Case> cases() {
  using K = cfg::RingKind;
  auto three = [] { return std::vector{backend("node1", 3001), backend("node2", 3002), backend("node3", 3003)}; };
  // Five with unequal weights; the same five listed in another order and on other ports; the
  // five without node-c (removed from the config).
  auto five = [] {
    return std::vector{backend("node-a", 9001), backend("node-b", 9002, 2), backend("node-c", 9003),
                       backend("node-d", 9004, 3), backend("node-e", 9005)};
  };
  auto five_shuffled = [] {
    return std::vector{backend("node-d", 7004, 3), backend("node-a", 7001), backend("node-e", 7005),
                       backend("node-c", 7003), backend("node-b", 7002, 2)};
  };
  auto four = [] {
    return std::vector{backend("node-a", 9001), backend("node-b", 9002, 2), backend("node-d", 9004, 3),
                       backend("node-e", 9005)};
  };
  std::vector<cfg::BackendConfig> twelve;
  for (int i = 1; i <= 12; ++i) twelve.push_back(backend("io-" + std::to_string(i), static_cast<uint16_t>(4000 + i)));
  return {
      {"maglev-3", K::kMaglev, 65537, three()},
      {"maglev-5w", K::kMaglev, 65537, five()},
      {"maglev-5w-reordered", K::kMaglev, 65537, five_shuffled()},
      {"maglev-5w-minus-c", K::kMaglev, 65537, four()},
      {"maglev-5w-1009", K::kMaglev, 1009, five()},
      {"maglev-12-131071", K::kMaglev, 131071, twelve},
      {"rendezvous-3", K::kRendezvous, 0, three()},
      {"rendezvous-5w", K::kRendezvous, 0, five()},
      {"rendezvous-5w-minus-c", K::kRendezvous, 0, four()},
      {"rendezvous-12", K::kRendezvous, 0, twelve},
  };
}

}  // namespace

int main() {
  const std::vector<std::string> keys = make_keys();
  std::vector<Case> all = cases();

  std::deque<cfg::UpstreamConfig> configs;  // an Upstream points into its config
  lb::BackendRegistry registry;
  limpet::ManualClock clock;
  std::vector<std::shared_ptr<const lb::Upstream>> upstreams;
  for (const Case& c : all) {
    cfg::UpstreamConfig& u = configs.emplace_back();
    u.name = "app";
    u.ring = c.ring;
    if (c.ring_size) u.ring_size = c.ring_size;
    u.backends = c.backends;
    cfg::HashKeySource room;
    room.kind = cfg::HashKeySource::Kind::kQuery;
    room.name = "room";
    u.hash_keys = {room};
    auto built = lb::Upstream::build(u, registry, nullptr, clock);
    if (!built.is_ok()) {
      std::fprintf(stderr, "ring_dump: %s: %s\n", c.label.c_str(), built.message().c_str());
      return 1;
    }
    upstreams.push_back(*built);
  }

  // Preference order past a member that cannot take the key (down, draining, over the load
  // bound): the five-backend rings with node-c (index 2 in five()) ineligible.
  std::vector<std::unique_ptr<lb::Ring>> down_rings;
  std::vector<std::string> down_labels;
  for (const auto kind : {cfg::RingKind::kMaglev, cfg::RingKind::kRendezvous}) {
    std::vector<lb::RingMember> m;
    for (const auto& b : all[1].backends) m.push_back({b.name, b.weight});
    auto r = lb::Ring::build(kind, m, 65537);
    if (!r.is_ok()) {
      std::fprintf(stderr, "ring_dump: %s\n", r.message().c_str());
      return 1;
    }
    down_rings.push_back(std::move(*r));
    down_labels.push_back(kind == cfg::RingKind::kMaglev ? "maglev-5w-c-down" : "rendezvous-5w-c-down");
  }

  std::printf("# ring_dump v1: key, then the backend per config\n# key");
  for (const Case& c : all) std::printf("\t%s", c.label.c_str());
  for (const auto& l : down_labels) std::printf("\t%s", l.c_str());
  std::printf("\n");

  for (const std::string& key : keys) {
    std::printf("%s", key.c_str());
    const std::string q = "room=" + key;
    const std::string target = "/?" + q;  // the head holds views: keep what they point at alive
    limpet::http::RequestHead h;
    h.method = "GET";
    h.path = "/";
    h.query = q;
    h.target = target;
    for (size_t i = 0; i < upstreams.size(); ++i) {
      const lb::Route route = upstreams[i]->route({h, "192.0.2.1", {}, 1});
      if (route.reason != lb::RouteReason::kHash || route.backend < 0) {
        std::fprintf(stderr, "ring_dump: %s: key %s not routed by hash\n", all[i].label.c_str(), key.c_str());
        return 1;
      }
      std::printf("\t%s", upstreams[i]->backends()[static_cast<size_t>(route.backend)].config->name.c_str());
    }
    const uint64_t kh = lb::hash64(key, lb::seed::kKey);
    for (const auto& r : down_rings) {
      const int i = r->lookup(kh, [](int j) { return j != 2; });
      std::printf("\t%s", i < 0 ? "-" : all[1].backends[static_cast<size_t>(i)].name.c_str());
    }
    std::printf("\n");
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}
