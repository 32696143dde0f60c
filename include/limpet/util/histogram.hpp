// Fixed-bucket histograms with relaxed atomic counters: written by one worker, read (and summed
// over workers) by the admin scrape on the main thread. Buckets follow Prometheus conventions
// (upper bounds in seconds, cumulative on output).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace limpet {

// Latencies, up to a minute: an Engine.IO long-poll is held about 25 s (pingInterval), and a
// histogram whose last bound is 10 s puts every one of them in +Inf.
inline constexpr std::array<double, 14> kLatencyBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                          0.25,  0.5,    1.0,   2.5,  10.0,  30.0, 60.0};
// Lifetimes of WebSocket tunnels: a page view (seconds), a reconnect cycle after a deploy
// (minutes), a tab left open (hours, a day).
inline constexpr std::array<double, 12> kLifetimeBounds = {1,    5,    10,    30,    60,    300,
                                                           900, 1800, 3600, 14400, 43200, 86400};

template <const auto& Bounds>
class BasicHistogram {
 public:
  static constexpr const auto& kBounds = Bounds;
  static constexpr size_t kBuckets = Bounds.size() + 1;  // last one is +Inf

  void observe_us(uint64_t micros) {
    double seconds = static_cast<double>(micros) / 1e6;
    size_t i = 0;
    while (i < kBounds.size() && seconds > kBounds[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(micros, std::memory_order_relaxed);
  }

  // Plain copy for summing and rendering.
  struct Values {
    static constexpr const auto& kBounds = Bounds;
    std::array<uint64_t, kBuckets> counts{};  // per bucket, not cumulative
    uint64_t sum_us = 0;
    void add(const Values& o) {
      for (size_t i = 0; i < kBuckets; ++i) counts[i] += o.counts[i];
      sum_us += o.sum_us;
    }
  };
  Values values() const {
    Values v;
    for (size_t i = 0; i < kBuckets; ++i) v.counts[i] = counts_[i].load(std::memory_order_relaxed);
    v.sum_us = sum_us_.load(std::memory_order_relaxed);
    return v;
  }

 private:
  std::array<std::atomic<uint64_t>, kBuckets> counts_{};
  std::atomic<uint64_t> sum_us_{0};
};

using Histogram = BasicHistogram<kLatencyBounds>;
using LifetimeHistogram = BasicHistogram<kLifetimeBounds>;

}  // namespace limpet
