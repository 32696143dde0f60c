#include "limpet/proxy/backend_lease.hpp"

namespace limpet::proxy {

BackendLease::BackendLease(const balancer::Upstream& upstream, int index, bool count_request)
    : backend_(&upstream.backends()[static_cast<size_t>(index)]), index_(index) {
  backend_->state->in_flight.fetch_add(1, std::memory_order_relaxed);
  if (count_request) backend_->state->requests.fetch_add(1, std::memory_order_relaxed);
}

void BackendLease::count_placing() {
  if (backend_ == nullptr || placing_) return;
  placing_ = true;
  backend_->state->placing.fetch_add(1, std::memory_order_relaxed);
}

void BackendLease::end_placing() {
  if (!placing_) return;
  placing_ = false;
  backend_->state->placing.fetch_sub(1, std::memory_order_relaxed);
}

void BackendLease::release() {
  if (backend_ == nullptr) return;
  end_placing();
  backend_->state->in_flight.fetch_sub(1, std::memory_order_relaxed);
  backend_ = nullptr;
}

}  // namespace limpet::proxy
