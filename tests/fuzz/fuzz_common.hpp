// Shared by the libFuzzer targets: a check that aborts (so libFuzzer saves the input as a crash)
// with a readable message, printable escaping of inputs, and a small deterministic PRNG seeded
// from the input for split points. Fuzz targets only; single-threaded.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace limpet::fuzz {

// Bytes as a C string literal body: printable ASCII as is, the rest as \xNN, CR/LF as \r \n.
inline std::string escape(std::string_view s, size_t max = 600) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\r') {
      out += "\\r";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\\' || c == '"') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > max) out += "...(" + std::to_string(s.size()) + " bytes)";
  return out;
}

[[noreturn]] inline void check_failed(const char* expr, const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "\n*** fuzz check failed: %s\n    at %s:%d\n    %s\n", expr, file, line, what.c_str());
  std::fflush(stderr);
  std::abort();
}

// FUZZ_CHECK(condition, std::string explaining the mismatch). Always on (not assert()).
#define FUZZ_CHECK(cond, what)                                                  \
  do {                                                                          \
    if (!(cond)) ::limpet::fuzz::check_failed(#cond, __FILE__, __LINE__, (what)); \
  } while (0)

// Known differences (tests/fuzz/README.md) are reported bugs outside the fuzzed modules: a target
// skips such an input instead of failing, so that CI stays green until they are fixed, unless
// LIMPET_FUZZ_STRICT=1 is set (then they fail like any other mismatch).
inline bool strict() {
  static const bool on = std::getenv("LIMPET_FUZZ_STRICT") != nullptr;
  return on;
}

// splitmix64: split points derived from the input itself, so a crash reproduces from its file.
class Rng {
 public:
  explicit Rng(std::string_view seed) {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
    for (unsigned char c : seed) h = (h ^ c) * 1099511628211ull;
    state_ = h;
  }
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform enough in [0, n); n > 0.
  size_t below(size_t n) { return static_cast<size_t>(next() % n); }

 private:
  uint64_t state_;
};

}  // namespace limpet::fuzz
