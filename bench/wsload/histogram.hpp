// Latency histogram for wsload: log-linear buckets (64 per power of two, under 1.6 % error) over
// nanoseconds, so millions of samples cost a fixed 30 KB and no allocation while recording.
// Single-threaded (the load generator's loop thread).
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace wsload {

class Histogram {
 public:
  void record(uint64_t value) {
    ++buckets_[index_of(value)];
    ++count_;
    if (value > max_) max_ = value;
  }

  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }

  // Value at quantile q (0..1): the midpoint of the bucket holding the q-th sample.
  uint64_t quantile(double q) const {
    if (count_ == 0) return 0;
    uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(count_));
    if (rank >= count_) rank = count_ - 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      seen += buckets_[i];
      if (seen > rank) {
        uint64_t v = value_of(i);
        return v > max_ ? max_ : v;
      }
    }
    return max_;
  }

 private:
  static constexpr int kSubBits = 6;  // 64 sub-buckets per power of two
  static constexpr size_t kBuckets = (64 - kSubBits) * (size_t{1} << kSubBits) + (size_t{1} << (kSubBits + 1));

  static size_t index_of(uint64_t v) {
    int msb = 63 - std::countl_zero(v | 1);
    if (msb <= kSubBits) return static_cast<size_t>(v);  // exact below 128
    int shift = msb - kSubBits;
    return static_cast<size_t>(shift) * (size_t{1} << kSubBits) + static_cast<size_t>(v >> shift);
  }

  static uint64_t value_of(size_t index) {
    if (index < (size_t{1} << (kSubBits + 1))) return index;
    size_t shift = index / (size_t{1} << kSubBits) - 1;
    uint64_t mantissa = index - shift * (size_t{1} << kSubBits);
    return (mantissa << shift) + (uint64_t{1} << (shift - 1));
  }

  std::array<uint64_t, kBuckets> buckets_{};
  uint64_t count_ = 0;
  uint64_t max_ = 0;
};

}  // namespace wsload
