// A request's (and then a tunnel's) claim on one backend: while held it counts in the backend's
// in_flight (least_conn, the status page), and it gives the count back exactly once, whatever
// path the exchange ends on. Move-only; an empty lease holds nothing. Owning worker only.
#pragma once

#include <utility>

#include "limpet/balancer/upstream.hpp"

namespace limpet::proxy {

class BackendLease {
 public:
  BackendLease() = default;
  // Counts a request and an in-flight unit on backend `index` of `upstream`.
  BackendLease(const balancer::Upstream& upstream, int index);
  BackendLease(BackendLease&& other) noexcept
      : backend_(std::exchange(other.backend_, nullptr)), index_(other.index_) {}
  BackendLease& operator=(BackendLease&& other) noexcept {
    if (this != &other) {
      release();
      backend_ = std::exchange(other.backend_, nullptr);
      index_ = other.index_;
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

  void release();

 private:
  const balancer::RuntimeBackend* backend_ = nullptr;
  int index_ = 0;
};

}  // namespace limpet::proxy
