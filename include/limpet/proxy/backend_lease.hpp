// A request's (and then a tunnel's) claim on one backend: while held it counts in the backend's
// in_flight (least_conn, the status page) and, for a newly placed session, in its `placing`
// until the session exists; it gives each count back exactly once, whatever path the exchange
// ends on. Move-only; an empty lease holds nothing. Owning worker only.
#pragma once

#include <utility>

#include "limpet/balancer/upstream.hpp"

namespace limpet::proxy {

class BackendLease {
 public:
  BackendLease() = default;
  // Counts an in-flight unit (and a request, unless it is the same request sent again) on
  // backend `index` of `upstream`.
  BackendLease(const balancer::Upstream& upstream, int index, bool count_request = true);
  BackendLease(BackendLease&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)),
        index_(other.index_),
        placing_(std::exchange(other.placing_, false)) {}
  BackendLease& operator=(BackendLease&& other) noexcept {
    if (this != &other) {
      release();
      backend_ = std::exchange(other.backend_, nullptr);
      index_ = other.index_;
      placing_ = std::exchange(other.placing_, false);
    }
    return *this;
  }
  BackendLease(const BackendLease&) = delete;
  BackendLease& operator=(const BackendLease&) = delete;
  ~BackendLease() { release(); }

  explicit operator bool() const { return backend_ != nullptr; }
  // Only while held.
  int index() const { return index_; }
  const balancer::RuntimeBackend& backend() const { return *backend_; }
  balancer::BackendState& state() const { return *backend_->state; }
  const char* name() const { return backend_->config->name.c_str(); }

  // A new session placed on this backend is on its way (Route::new_session) ...
  void count_placing();
  // ... and now exists (its tunnel is open) or never will: counted once.
  void end_placing();
  void release();

 private:
  const balancer::RuntimeBackend* backend_ = nullptr;
  int index_ = 0;
  bool placing_ = false;
};

}  // namespace limpet::proxy
