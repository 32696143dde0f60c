// Hashing for routing decisions: ring construction, consistent-hash keys, affinity shards and
// sticky-cookie tokens. Pure functions, any thread. The output is part of limpet's behaviour:
// several instances behind an L4 balancer must compute the same ring and send the same key to the
// same backend, so the hash never depends on the CPU's byte order, the process or a random seed.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace limpet::balancer {

__extension__ typedef unsigned __int128 Uint128;  // GCC/clang builtin; __extension__ keeps -pedantic quiet

// Final avalanche: every input bit flips each output bit with probability ~1/2. These are the
// splitmix64 finalizer's published multipliers (Stafford's "Mix13" search); the function is a
// bijection, so distinct inputs never collide here.
constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// 64x64 -> 128-bit multiply folded to 64 bits: one instruction on x86-64/aarch64 and a strong
// mixer of both operands (every output bit depends on every input bit).
inline uint64_t fold_mul(uint64_t a, uint64_t b) {
  const Uint128 p = static_cast<Uint128>(a) * b;
  return static_cast<uint64_t>(p) ^ static_cast<uint64_t>(p >> 64);
}

// Uniform map of a 64-bit hash onto [0, n) with a multiply and a shift instead of a division
// (Lemire's "fast range"); uses the hash's high bits, which fold_mul/mix64 mix best.
inline uint64_t fast_range(uint64_t h, uint64_t n) {
  return static_cast<uint64_t>((static_cast<Uint128>(h) * n) >> 64);
}

namespace detail {

// Odd constants with no structure to exploit: fractional parts of sqrt(2), sqrt(3), sqrt(5) and
// the golden ratio.
inline constexpr uint64_t kH0 = 0x6a09e667f3bcc909ULL;
inline constexpr uint64_t kH1 = 0xbb67ae8584caa73bULL;
inline constexpr uint64_t kH2 = 0x3c6ef372fe94f82bULL;
inline constexpr uint64_t kH3 = 0x9e3779b97f4a7c15ULL;

inline uint64_t load64(const unsigned char* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap64(v);
  return v;
}

inline uint64_t load32(const unsigned char* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  if constexpr (std::endian::native == std::endian::big) v = __builtin_bswap32(v);
  return v;
}

}  // namespace detail

// limpet's string hash. Layout: 16-byte stripes, each folded into the state with one 128-bit
// multiply; the 0..16 byte tail read with (possibly overlapping) loads so short strings such as
// 20-byte Engine.IO sids cost two multiplies; the length is mixed in so "a" and "a\0" differ; a
// splitmix64 finalizer avalanches the result. Not a cryptographic hash: it only has to spread
// keys evenly and is never fed attacker-chosen inserts (the affinity table learns ids from
// backends, not clients).
inline uint64_t hash64(std::string_view s, uint64_t seed = 0) {
  using detail::kH0;
  using detail::kH1;
  using detail::kH2;
  using detail::kH3;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  size_t n = s.size();
  uint64_t h = seed ^ kH0 ^ fold_mul(seed ^ kH1, static_cast<uint64_t>(n) ^ kH2);
  while (n > 16) {
    h ^= fold_mul(detail::load64(p) ^ kH1, detail::load64(p + 8) ^ h ^ kH2);
    p += 16;
    n -= 16;
  }
  uint64_t a = 0;
  uint64_t b = 0;
  if (n > 8) {
    a = detail::load64(p);
    b = detail::load64(p + n - 8);
  } else if (n >= 4) {
    a = (detail::load32(p) << 32) | detail::load32(p + n - 4);
  } else if (n > 0) {
    a = (uint64_t{p[0]} << 16) | (uint64_t{p[n / 2]} << 8) | p[n - 1];
  }
  h = fold_mul(a ^ kH3 ^ n, b ^ h ^ kH2);
  return mix64(h ^ s.size());
}

// Combine two hashes into one that behaves as independent of either (rendezvous scores, probe
// sequences): asymmetric, so (a, b) and (b, a) differ.
// Split in two halves so a loop over many b (rendezvous over every backend) mixes a once:
// hash_pair(a, b) == hash_pair_join(hash_pair_left(a), hash_pair_right(b)).
constexpr uint64_t hash_pair_left(uint64_t a) { return mix64(a ^ detail::kH1); }
constexpr uint64_t hash_pair_right(uint64_t b) { return b * detail::kH3; }
constexpr uint64_t hash_pair_join(uint64_t left, uint64_t right) { return mix64(left + right); }
constexpr uint64_t hash_pair(uint64_t a, uint64_t b) {
  return hash_pair_join(hash_pair_left(a), hash_pair_right(b));
}

}  // namespace limpet::balancer
