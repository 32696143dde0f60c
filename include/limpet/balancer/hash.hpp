// Hashing for routing decisions: ring construction, consistent-hash keys, affinity shards and
// sticky-cookie tokens. Pure functions, any thread. The output is part of limpet's behaviour:
// several instances behind an L4 balancer, and one instance across upgrades, must compute the same
// ring and send the same key to the same backend, so every step below is a published, frozen
// algorithm with fixed seeds, independent of the CPU's byte order, the process and the build.
//
// The specification, in full (tests/unit/balancer/golden_test.cpp pins it with golden values):
//  - A string is hashed with XXH3_64bits_withSeed (xxHash, whose XXH3 output is frozen since
//    0.8.0) over its bytes, with the seed of its use from `seed` below.
//  - Two 64-bit values are combined by hash_pair (the splitmix64 finalizer, mix64, over an
//    asymmetric combination of both), for Maglev probe orders and rendezvous scores.
//  - A 64-bit hash is mapped onto [0, n) by fast_range: (h * n) >> 64.
#pragma once

#include <xxhash.h>

#include <cstdint>
#include <string_view>

namespace limpet::balancer {

// One seed per use, so the hashes of one string for two uses are independent (a backend whose
// Maglev offset is close to another's does not also walk a similar permutation). Each is the
// ASCII of "limpet-" and one letter, big-endian. Changing any of them remaps keys or cookies.
namespace seed {
inline constexpr uint64_t kKey = 0x6c696d7065742d6bULL;     // "limpet-k": a hash_keys value
inline constexpr uint64_t kName = 0x6c696d7065742d6eULL;    // "limpet-n": backend name, rendezvous score
inline constexpr uint64_t kOffset = 0x6c696d7065742d6fULL;  // "limpet-o": backend name, Maglev offset
inline constexpr uint64_t kSkip = 0x6c696d7065742d73ULL;    // "limpet-s": backend name, Maglev skip
inline constexpr uint64_t kCookie = 0x6c696d7065742d63ULL;  // "limpet-c": backend name, sticky-cookie token
// Engine.IO sid: affinity shard and slot. Never leaves the process, so not part of the contract
// between instances, but one seed keeps shard choice apart from anything else hashed.
inline constexpr uint64_t kSid = 0x6c696d7065742d61ULL;  // "limpet-a"
}  // namespace seed

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

// Uniform map of a 64-bit hash onto [0, n) with a multiply and a shift instead of a division
// (Lemire's "fast range"); uses the hash's high bits, which XXH3 and mix64 mix best.
inline uint64_t fast_range(uint64_t h, uint64_t n) {
  return static_cast<uint64_t>((static_cast<Uint128>(h) * n) >> 64);
}

// limpet's string hash: XXH3, 64-bit, seeded (see the specification above). Not a cryptographic
// hash: it only has to spread keys evenly and is never fed attacker-chosen inserts (the affinity
// table learns ids from backends, not clients). The default seed is for tests and benchmarks;
// routing always names one from `seed`.
inline uint64_t hash64(std::string_view s, uint64_t seed = 0) {
  return XXH3_64bits_withSeed(s.data(), s.size(), seed);
}

namespace detail {

// Odd constants with no structure to exploit: fractional parts of sqrt(3) and the golden ratio.
inline constexpr uint64_t kPairLeft = 0xbb67ae8584caa73bULL;
inline constexpr uint64_t kPairRight = 0x9e3779b97f4a7c15ULL;

}  // namespace detail

// Combine two hashes into one that behaves as independent of either (rendezvous scores, probe
// sequences): hash_pair(a, b) = mix64(mix64(a ^ kPairLeft) + b * kPairRight) (mod 2^64),
// asymmetric, so (a, b) and (b, a) differ.
// Split in two halves so a loop over many b (rendezvous over every backend) mixes a once:
// hash_pair(a, b) == hash_pair_join(hash_pair_left(a), hash_pair_right(b)).
constexpr uint64_t hash_pair_left(uint64_t a) { return mix64(a ^ detail::kPairLeft); }
constexpr uint64_t hash_pair_right(uint64_t b) { return b * detail::kPairRight; }
constexpr uint64_t hash_pair_join(uint64_t left, uint64_t right) { return mix64(left + right); }
constexpr uint64_t hash_pair(uint64_t a, uint64_t b) {
  return hash_pair_join(hash_pair_left(a), hash_pair_right(b));
}

}  // namespace limpet::balancer
