// Monotonic milliseconds on the CLOCK_MONOTONIC epoch (the epoch of uv_hrtime()), for state that
// several threads compare: health transitions, slow start. Not for hot paths (a vDSO call).
#pragma once

#include <time.h>

#include <cstdint>

namespace limpet {

inline int64_t monotonic_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

}  // namespace limpet
