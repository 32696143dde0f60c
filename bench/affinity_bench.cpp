// Affinity table micro benchmark: lookup / learn+forget / mixed traffic under contention
// (1, 2, 4 threads sharing one table), and memory per session for 1,000,000 sessions.
//
//   affinity_bench --memory   RSS and table bytes per entry for 1M sids (20 and 36 characters)
//   affinity_bench [gbench flags]
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/hash.hpp"

namespace {

using limpet::balancer::AffinityTable;
using limpet::balancer::BackendRegistry;
using std::chrono::milliseconds;

constexpr size_t kSessions = 1000000;
constexpr milliseconds kTtl{50000};

// A 20-character base64url sid, like Engine.IO's, derived from a number (no storage needed).
void make_sid(uint64_t n, char* out, size_t len = 20) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint64_t x = n * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
  for (size_t i = 0; i < len; ++i) {
    if (i % 10 == 0) x = limpet::balancer::mix64(x + i);
    out[i] = kAlphabet[x & 63];
    x >>= 6;
  }
}

struct Shared {
  BackendRegistry registry;
  std::vector<uint32_t> ids;
  std::unique_ptr<AffinityTable> table;
  Shared() {
    for (int i = 0; i < 3; ++i) ids.push_back(registry.get_or_create("node-" + std::to_string(i))->id);
    table = std::make_unique<AffinityTable>(registry, 2 * kSessions);
    char sid[20];
    for (uint64_t n = 0; n < kSessions; ++n) {
      make_sid(n, sid);
      table->learn(std::string_view(sid, 20), ids[n % 3], kTtl);
    }
  }
};

Shared& shared() {
  static Shared s;
  return s;
}

// Every request of a session looks its sid up (a hit refreshes the deadline).
void BM_LookupHit(benchmark::State& state) {
  Shared& s = shared();
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  char sid[20];
  for (auto _ : state) {
    make_sid(rng() % kSessions, sid);
    benchmark::DoNotOptimize(s.table->lookup(std::string_view(sid, 20), kTtl));
  }
}

// A session's life in the table: learned from the handshake, forgotten when its tunnel closes.
void BM_LearnForget(benchmark::State& state) {
  Shared& s = shared();
  uint64_t n = (static_cast<uint64_t>(state.thread_index()) + 1) << 40;  // own key space per thread
  char sid[20];
  for (auto _ : state) {
    make_sid(n++, sid);
    s.table->learn(std::string_view(sid, 20), s.ids[n % 3], kTtl);
    s.table->forget(std::string_view(sid, 20));
  }
}

// Roughly a polling workload: mostly lookups, some handshakes and closes.
void BM_Mixed(benchmark::State& state) {
  Shared& s = shared();
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 100);
  uint64_t fresh = (static_cast<uint64_t>(state.thread_index()) + 1) << 40;
  char sid[20];
  for (auto _ : state) {
    const uint64_t r = rng();
    if (r % 20 == 0) {
      make_sid(fresh++, sid);
      s.table->learn(std::string_view(sid, 20), s.ids[r % 3], kTtl);
    } else if (r % 20 == 1) {
      make_sid(fresh - 1, sid);
      s.table->forget(std::string_view(sid, 20));
    } else {
      make_sid(r % kSessions, sid);
      benchmark::DoNotOptimize(s.table->lookup(std::string_view(sid, 20), kTtl));
    }
  }
}

// Baseline for scale: the obvious alternative, one std::unordered_map behind one mutex, with the
// same keys. Shows what the memory system alone costs on this machine, and what sharding buys
// under contention.
struct Baseline {
  std::mutex mu;
  std::unordered_map<std::string, uint32_t> map;
  Baseline() {
    char sid[20];
    map.reserve(kSessions);
    for (uint64_t n = 0; n < kSessions; ++n) {
      make_sid(n, sid);
      map.emplace(std::string(sid, 20), static_cast<uint32_t>(n % 3));
    }
  }
};

void BM_BaselineUnorderedMapLookup(benchmark::State& state) {
  static Baseline b;
  std::mt19937_64 rng(static_cast<uint64_t>(state.thread_index()) + 1);
  char sid[20];
  for (auto _ : state) {
    make_sid(rng() % kSessions, sid);
    std::lock_guard lock(b.mu);
    auto it = b.map.find(std::string(sid, 20));
    benchmark::DoNotOptimize(it);
  }
}

BENCHMARK(BM_LookupHit)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_BaselineUnorderedMapLookup)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_LearnForget)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();
BENCHMARK(BM_Mixed)->Threads(1)->Threads(2)->Threads(4)->UseRealTime();

size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0;
  size_t resident = 0;
  statm >> pages >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

void memory_for(size_t sid_len) {
  BackendRegistry registry;
  const uint32_t id = registry.get_or_create("node")->id;
  const size_t before = rss_bytes();
  {
    AffinityTable table(registry, 0);
    std::vector<char> sid(sid_len);
    for (uint64_t n = 0; n < kSessions; ++n) {
      make_sid(n, sid.data(), sid_len);
      table.learn(std::string_view(sid.data(), sid_len), id, kTtl);
    }
    const size_t after = rss_bytes();
    // What the main thread's housekeeping pays per full expire() when nothing is due.
    const auto t0 = std::chrono::steady_clock::now();
    table.expire();
    const double sweep_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("| %zu | %zu | %.1f MB | %.1f | %.1f MB | %.1f | %.2f ms |\n", sid_len, table.size(),
                static_cast<double>(after - before) / 1e6, static_cast<double>(after - before) / kSessions,
                static_cast<double>(table.memory_bytes()) / 1e6,
                static_cast<double>(table.memory_bytes()) / kSessions, sweep_ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--memory") == 0) {
      std::printf("| sid length | entries | RSS growth | RSS bytes/entry | table bytes | table bytes/entry | full expire() sweep |\n");
      std::printf("|---|---|---|---|---|---|---|\n");
      memory_for(20);
      memory_for(36);
      return 0;
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
