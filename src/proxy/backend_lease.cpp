#include "limpet/proxy/backend_lease.hpp"

namespace limpet::proxy {

BackendLease::BackendLease(const balancer::Upstream& upstream, int index)
    : backend_(&upstream.backends()[static_cast<size_t>(index)]), index_(index) {
  backend_->state->in_flight.fetch_add(1, std::memory_order_relaxed);
  backend_->state->requests.fetch_add(1, std::memory_order_relaxed);
}

void BackendLease::release() {
  if (backend_ == nullptr) return;
  backend_->state->in_flight.fetch_sub(1, std::memory_order_relaxed);
  backend_ = nullptr;
}

}  // namespace limpet::proxy
