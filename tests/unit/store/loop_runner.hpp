// Runs a libuv loop until a condition holds or a deadline passes (a guard timer wakes the loop,
// so the deadline holds even when nothing else happens). Tests only.
#pragma once

#include <uv.h>

#include <functional>

namespace limpet::store::testing {

inline bool run_until(uv_loop_t* loop, const std::function<bool()>& done, uint64_t deadline_ms = 5000) {
  uv_timer_t guard;
  uv_timer_init(loop, &guard);
  uv_timer_start(&guard, [](uv_timer_t*) {}, 10, 10);
  const uint64_t end = uv_now(loop) + deadline_ms;
  bool ok = done();
  while (!ok && uv_now(loop) < end) {
    uv_run(loop, UV_RUN_ONCE);
    ok = done();
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return ok;
}

}  // namespace limpet::store::testing
