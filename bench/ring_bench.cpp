// Consistent-hash ring micro benchmark: limpet's Maglev and rendezvous rings beside an
// nginx-style ring (ngx_http_upstream_hash "consistent": 160 points per weight unit, CRC32 of
// "host:port" point keys, binary search), on the same 1,000,000 random keys.
//
//   ring_bench --table        balance, movement on removal and lookup ns, as one Markdown table
//   ring_bench [gbench flags] the lookup benchmarks alone (Google Benchmark)
//
// Lookup times exclude hashing the key string: every ring gets precomputed key hashes (limpet's
// hash64 for limpet's rings, CRC32 for the nginx ring, as nginx does). They are throughput
// figures (independent lookups back to back), single thread.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <array>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "limpet/balancer/hash.hpp"
#include "limpet/balancer/ring.hpp"

namespace {

using limpet::balancer::Ring;
using limpet::balancer::RingMember;
using limpet::config::RingKind;

constexpr size_t kKeys = 1000000;
constexpr uint32_t kTableSize = 65537;
constexpr int kBackendCounts[] = {3, 5, 10, 50};

// --- CRC32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as nginx's ngx_crc32_* compute it.
struct Crc32Table {
  std::array<uint32_t, 256> t{};
  Crc32Table() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
  }
};
const Crc32Table kCrc;

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) crc = kCrc.t[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return crc;
}
uint32_t crc32(std::string_view s) { return crc32_update(0xffffffffu, s.data(), s.size()) ^ 0xffffffffu; }

// nginx-style consistent ring, written from the published description of
// ngx_http_upstream_hash's "consistent" mode: each server contributes 160 * weight points; the
// point hashes chain CRC32(host "\0" port, previous point hash); points are sorted, and a key
// goes to the first point at or after CRC32(key), wrapping around.
class NginxRing {
 public:
  struct Server {
    std::string host;
    std::string port;
    uint32_t weight;
  };
  explicit NginxRing(const std::vector<Server>& servers) {
    for (size_t s = 0; s < servers.size(); ++s) {
      uint32_t base = 0xffffffffu;
      base = crc32_update(base, servers[s].host.data(), servers[s].host.size());
      base = crc32_update(base, "", 1);
      base = crc32_update(base, servers[s].port.data(), servers[s].port.size());
      uint32_t prev = 0;
      for (uint32_t j = 0; j < 160 * servers[s].weight; ++j) {
        unsigned char bytes[4] = {static_cast<unsigned char>(prev), static_cast<unsigned char>(prev >> 8),
                                  static_cast<unsigned char>(prev >> 16), static_cast<unsigned char>(prev >> 24)};
        const uint32_t h = crc32_update(base, bytes, 4) ^ 0xffffffffu;
        points_.push_back({h, static_cast<uint32_t>(s)});
        prev = h;
      }
    }
    std::sort(points_.begin(), points_.end(), [](const Point& a, const Point& b) { return a.hash < b.hash; });
    // Equal hashes: nginx keeps the first.
    points_.erase(std::unique(points_.begin(), points_.end(),
                              [](const Point& a, const Point& b) { return a.hash == b.hash; }),
                  points_.end());
    hashes_.reserve(points_.size());
    for (const auto& p : points_) hashes_.push_back(p.hash);
  }
  int lookup(uint32_t key_hash) const {
    auto it = std::lower_bound(hashes_.begin(), hashes_.end(), key_hash);
    const size_t i = it == hashes_.end() ? 0 : static_cast<size_t>(it - hashes_.begin());
    return static_cast<int>(points_[i].server);
  }
  size_t points() const { return points_.size(); }

 private:
  struct Point {
    uint32_t hash;
    uint32_t server;
  };
  std::vector<Point> points_;
  std::vector<uint32_t> hashes_;
};

struct Keys {
  std::vector<uint64_t> h64;  // limpet: hash64 of the key string
  std::vector<uint32_t> h32;  // nginx: crc32 of the key string
};

const Keys& keys() {
  static const Keys k = [] {
    Keys out;
    std::mt19937_64 rng(20240601);
    out.h64.reserve(kKeys);
    out.h32.reserve(kKeys);
    char buf[32];
    for (size_t i = 0; i < kKeys; ++i) {
      const int n = std::snprintf(buf, sizeof buf, "key-%016" PRIx64, static_cast<uint64_t>(rng()));
      const std::string_view s(buf, static_cast<size_t>(n));
      out.h64.push_back(limpet::balancer::hash64(s));
      out.h32.push_back(crc32(s));
    }
    return out;
  }();
  return k;
}

std::string name_of(int i) { return "node-" + std::to_string(i + 1); }

std::vector<RingMember> members(int n, int skip = -1) {
  std::vector<RingMember> m;
  for (int i = 0; i < n; ++i) {
    if (i != skip) m.push_back({name_of(i), 1});
  }
  return m;
}

std::vector<NginxRing::Server> servers(int n, int skip = -1) {
  std::vector<NginxRing::Server> s;
  for (int i = 0; i < n; ++i) {
    if (i != skip) s.push_back({"10.0.0." + std::to_string(i + 1), "3000", 1});
  }
  return s;
}

std::unique_ptr<Ring> limpet_ring(RingKind kind, int n, int skip = -1) {
  auto r = Ring::build(kind, members(n, skip), kTableSize);
  if (!r) {
    std::fprintf(stderr, "ring: %s\n", r.message().c_str());
    std::exit(1);
  }
  return std::move(*r);
}

// --- Google Benchmark lookups ----------------------------------------------------------------

void BM_Maglev(benchmark::State& state) {
  auto ring = limpet_ring(RingKind::kMaglev, static_cast<int>(state.range(0)));
  const auto& k = keys().h64;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring->lookup(k[i]));
    if (++i == k.size()) i = 0;
  }
}

// One backend down: its keys take the probe path (first eligible along the key's own order).
void BM_MaglevOneDown(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  auto ring = limpet_ring(RingKind::kMaglev, n);
  std::vector<char> up(static_cast<size_t>(n), 1);
  up[static_cast<size_t>(n / 2)] = 0;
  const auto& k = keys().h64;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring->lookup(k[i], [&](int b) { return up[static_cast<size_t>(b)] != 0; }));
    if (++i == k.size()) i = 0;
  }
}

void BM_Rendezvous(benchmark::State& state) {
  auto ring = limpet_ring(RingKind::kRendezvous, static_cast<int>(state.range(0)));
  const auto& k = keys().h64;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring->lookup(k[i]));
    if (++i == k.size()) i = 0;
  }
}

// Weighted rendezvous pays a logarithm per backend (weights 1 and 2 alternating).
void BM_RendezvousWeighted(benchmark::State& state) {
  auto m = members(static_cast<int>(state.range(0)));
  for (size_t j = 0; j < m.size(); j += 2) m[j].weight = 2;
  auto ring = std::move(*Ring::build(RingKind::kRendezvous, m, kTableSize));
  const auto& k = keys().h64;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring->lookup(k[i]));
    if (++i == k.size()) i = 0;
  }
}

void BM_Nginx(benchmark::State& state) {
  NginxRing ring(servers(static_cast<int>(state.range(0))));
  const auto& k = keys().h32;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ring.lookup(k[i]));
    if (++i == k.size()) i = 0;
  }
}

void BM_MaglevBuild(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(limpet_ring(RingKind::kMaglev, static_cast<int>(state.range(0))));
}

void BM_Hash64Sid(benchmark::State& state) {
  const std::string sid = "lv_VI97HAXpY6yYWAAAC";  // the string hash the lookups leave out
  for (auto _ : state) {
    benchmark::DoNotOptimize(sid.data());
    benchmark::DoNotOptimize(limpet::balancer::hash64(sid));
  }
}

#define RING_ARGS ->Arg(3)->Arg(5)->Arg(10)->Arg(50)->Unit(benchmark::kNanosecond)
BENCHMARK(BM_Maglev) RING_ARGS;
BENCHMARK(BM_MaglevOneDown) RING_ARGS;
BENCHMARK(BM_Rendezvous) RING_ARGS;
BENCHMARK(BM_RendezvousWeighted) RING_ARGS;
BENCHMARK(BM_Nginx) RING_ARGS;
BENCHMARK(BM_MaglevBuild)->Arg(3)->Arg(50)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Hash64Sid);

// --- the table ---------------------------------------------------------------------------------

// Captures per-benchmark CPU ns/iteration so the table uses Google Benchmark's timing. CPU time,
// not wall time: the figure should not depend on what else the machine runs.
class Capture : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      if (r.run_type == Run::RT_Aggregate && r.aggregate_name != "median") continue;
      ns[r.run_name.str()] = r.GetAdjustedCPUTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> ns;
};

template <typename Lookup>
double max_over_mean(int n, size_t count, const Lookup& lookup) {
  std::vector<size_t> c(static_cast<size_t>(n));
  for (size_t i = 0; i < count; ++i) ++c[static_cast<size_t>(lookup(i))];
  return static_cast<double>(*std::max_element(c.begin(), c.end())) / (static_cast<double>(count) / n);
}

struct Movement {
  double mean_ratio = 0;     // moved fraction x N, averaged over the removals tried
  double max_ratio = 0;
  double others_pct = 0;     // worst % of all keys moved although not on the removed backend
};

// Removes backends one at a time (all of them for small N, 10 spread out for N = 50) and compares
// every key's backend before and after. `before(i)` and `after(r, i)` return backend indexes in
// the full numbering.
template <typename Before, typename After>
Movement movement(int n, const Before& before, const After& after) {
  Movement m;
  const int tries = std::min(n, 10);
  const auto& k = keys().h64;
  std::vector<int> home(k.size());
  for (size_t i = 0; i < k.size(); ++i) home[i] = before(i);
  for (int t = 0; t < tries; ++t) {
    const int removed = t * n / tries;
    auto lookup = after(removed);
    size_t moved = 0;
    size_t others = 0;
    for (size_t i = 0; i < k.size(); ++i) {
      const int now = lookup(i);
      if (now != home[i]) {
        ++moved;
        if (home[i] != removed) ++others;
      }
    }
    const double ratio = static_cast<double>(moved) / static_cast<double>(k.size()) * n;
    m.mean_ratio += ratio / tries;
    m.max_ratio = std::max(m.max_ratio, ratio);
    m.others_pct = std::max(m.others_pct, 100.0 * static_cast<double>(others) / static_cast<double>(k.size()));
  }
  return m;
}

void print_row(const char* ring, int n, double balance, const Movement& mv, double ns, double ns_down) {
  char down[32] = "-";
  if (ns_down > 0) std::snprintf(down, sizeof down, "%.1f", ns_down);
  char others[32] = "none";
  if (mv.others_pct > 0) std::snprintf(others, sizeof others, "%.3f %% of keys", mv.others_pct);
  std::printf("| %-28s | %2d | %.4f | %.3f / %.3f | %s | %.1f | %s |\n", ring, n, balance, mv.mean_ratio,
              mv.max_ratio, others, ns, down);
}

int table(int argc, char** argv) {
  keys();
  // Timings first, through Google Benchmark (repeated, median kept).
  std::vector<char*> args(argv, argv + argc);
  std::string filter = "--benchmark_filter=BM_(Maglev|MaglevOneDown|Rendezvous|Nginx)/";
  std::string reps = "--benchmark_repetitions=5";
  std::string agg = "--benchmark_report_aggregates_only=true";
  args.push_back(filter.data());
  args.push_back(reps.data());
  args.push_back(agg.data());
  int ac = static_cast<int>(args.size());
  benchmark::Initialize(&ac, args.data());
  Capture capture;
  benchmark::RunSpecifiedBenchmarks(&capture);
  auto ns = [&](const std::string& name) {
    auto it = capture.ns.find(name + "_median");
    if (it == capture.ns.end()) it = capture.ns.find(name);
    return it == capture.ns.end() ? 0.0 : it->second;
  };

  const auto& k64 = keys().h64;
  const auto& k32 = keys().h32;
  std::printf("\n%zu random keys; table size %u for Maglev; nginx ring 160 points per server (weight 1).\n",
              kKeys, kTableSize);
  std::printf("moved x1/N: keys that changed backend when one backend is removed, times N (1.000 is the "
              "minimum: exactly the removed backend's share); mean / worst over the removals tried.\n");
  std::printf("lookup ns: CPU time per lookup, median of 5 Google Benchmark runs, key hash precomputed.\n\n");
  std::printf("| ring | N | max/mean load | moved x1/N (mean / worst) | keys moved that were not on the removed backend | lookup ns | lookup ns, 1 down |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  for (int n : kBackendCounts) {
    // Appended rather than "/" + to_string(n): GCC 12 -O3 flags that with a false -Wrestrict.
    std::string arg = "/";
    arg += std::to_string(n);
    auto maglev = limpet_ring(RingKind::kMaglev, n);
    const double mb = max_over_mean(n, kKeys, [&](size_t i) { return maglev->lookup(k64[i]); });
    auto before_m = [&](size_t i) { return maglev->lookup(k64[i]); };

    // Removed from the config: the table is rebuilt without it.
    std::unique_ptr<Ring> rebuilt;
    Movement mv_rebuild = movement(n, before_m, [&](int removed) {
      rebuilt = limpet_ring(RingKind::kMaglev, n, removed);
      return [&, removed](size_t i) {
        const int j = rebuilt->lookup(k64[i]);
        return j >= removed ? j + 1 : j;
      };
    });
    print_row("limpet maglev, rebuilt", n, mb, mv_rebuild, ns("BM_Maglev" + arg), 0);

    // Down, draining or excluded at run time: skipped along each key's own probe order.
    Movement mv_down = movement(n, before_m, [&](int removed) {
      return [&, removed](size_t i) { return maglev->lookup(k64[i], [removed](int b) { return b != removed; }); };
    });
    print_row("limpet maglev, down/skipped", n, mb, mv_down, ns("BM_Maglev" + arg), ns("BM_MaglevOneDown" + arg));

    auto hrw = limpet_ring(RingKind::kRendezvous, n);
    const double hb = max_over_mean(n, kKeys, [&](size_t i) { return hrw->lookup(k64[i]); });
    std::unique_ptr<Ring> hrw_rebuilt;
    Movement mv_hrw = movement(n, [&](size_t i) { return hrw->lookup(k64[i]); }, [&](int removed) {
      hrw_rebuilt = limpet_ring(RingKind::kRendezvous, n, removed);
      return [&, removed](size_t i) {
        const int j = hrw_rebuilt->lookup(k64[i]);
        return j >= removed ? j + 1 : j;
      };
    });
    print_row("limpet rendezvous", n, hb, mv_hrw, ns("BM_Rendezvous" + arg), 0);

    NginxRing ngx(servers(n));
    const double nb = max_over_mean(n, kKeys, [&](size_t i) { return ngx.lookup(k32[i]); });
    std::unique_ptr<NginxRing> ngx_rebuilt;
    Movement mv_ngx = movement(n, [&](size_t i) { return ngx.lookup(k32[i]); }, [&](int removed) {
      ngx_rebuilt = std::make_unique<NginxRing>(servers(n, removed));
      return [&, removed](size_t i) {
        const int j = ngx_rebuilt->lookup(k32[i]);
        return j >= removed ? j + 1 : j;
      };
    });
    print_row("nginx-style (160 pts, crc32)", n, nb, mv_ngx, ns("BM_Nginx" + arg), 0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--table") == 0) {
      std::vector<char*> rest;
      for (int j = 0; j < argc; ++j) {
        if (j != i) rest.push_back(argv[j]);
      }
      return table(static_cast<int>(rest.size()), rest.data());
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
