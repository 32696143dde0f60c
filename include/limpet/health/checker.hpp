// Active health checks (design §6), on the main thread's loop: one probe per backend of every
// upstream with [upstream.health] type "http" or "engineio", each on its own interval, results
// folded into the backend's shared BackendState (rise/fall) where placement, hashing and
// affinity see them at once. Also retries passively downed backends of upstreams without active
// checks once fail_timeout has passed. Main thread only.
#pragma once

#include <uv.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/upstream.hpp"
#include "limpet/tls/context.hpp"
#include "limpet/tls/counters.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "limpet/util/clock.hpp"

namespace limpet::health {

class Probe;

// One upstream to watch and, for a TLS upstream, how to connect to it.
struct Target {
  std::shared_ptr<const balancer::Upstream> upstream;
  std::shared_ptr<const tls::ClientContext> tls;  // null: plaintext
};

// The request a check sends: GET for "http", the Engine.IO polling handshake for "engineio".
std::string check_request(const config::HealthCheck& check, std::string_view host);
// The Engine.IO close packet for session `sid`: the checker ends the session its handshake opened.
std::string engineio_close_request(const config::HealthCheck& check, std::string_view host, std::string_view sid);

class Checker {
 public:
  // `clock` stamps the health transitions (slow start ramps from them): the same clock the
  // upstreams were built with. It must outlive the checker. Probes are scheduled by `loop`'s timers.
  Checker(uv_loop_t* loop, const Clock& clock);
  ~Checker();
  Checker(const Checker&) = delete;
  Checker& operator=(const Checker&) = delete;

  // Startup and every reload. A backend keeps its probe (and schedule) when its upstream, name,
  // address, TLS use and check settings are unchanged; the others are cancelled or started.
  void update(const std::vector<Target>& targets);
  // Shutdown: cancels every probe and closes every handle.
  void stop();

  size_t probes() const { return probes_.size(); }
  const tls::Counters& tls_counters() const { return tls_counters_; }

 private:
  friend class Probe;
  static void on_passive_tick(uv_timer_t* timer);
  void release_unchecked(const Target& target);

  uv_loop_t* loop_;
  const Clock& clock_;
  BufferPool buffers_{4};
  tls::Counters tls_counters_;
  std::map<std::string, std::unique_ptr<Probe>> probes_;  // "upstream/backend"
  std::vector<Target> targets_;
  uv_timer_t* passive_timer_ = nullptr;  // heap: freed by its close callback
};

}  // namespace limpet::health
