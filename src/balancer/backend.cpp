#include "limpet/balancer/backend.hpp"

namespace limpet::balancer {

bool BackendState::set_up(bool value, int64_t now_ms) {
  if (up.load(std::memory_order_relaxed) == value) return false;
  if (value) {
    came_back_ms_.store(now_ms, std::memory_order_relaxed);
    came_back_.store(true, std::memory_order_release);
    passive_down_ms_.reset();
    window_failures_ = 0;
  }
  up.store(value, std::memory_order_relaxed);
  return true;
}

bool BackendState::passive_failure(int64_t now_ms, uint32_t max_fails, int64_t window_ms) {
  failures.fetch_add(1, std::memory_order_relaxed);
  if (max_fails == 0) return false;
  std::lock_guard lock(health_mu_);
  if (window_failures_ == 0 || now_ms - window_start_ms_ >= window_ms) {
    window_start_ms_ = now_ms;
    window_failures_ = 0;
  }
  if (++window_failures_ < max_fails) return false;
  // Active checks start counting `rise` from zero: one lucky probe must not undo this.
  consecutive_ok_ = 0;
  if (!set_up(false, now_ms)) return false;
  passive_down_ms_ = now_ms;
  return true;
}

bool BackendState::passive_retry_due(int64_t now_ms, int64_t window_ms) {
  std::lock_guard lock(health_mu_);
  if (!passive_down_ms_ || now_ms - *passive_down_ms_ < window_ms) return false;
  return set_up(true, now_ms);
}

bool BackendState::check_result(bool ok, std::string_view detail, int rise, int fall, int64_t now_ms) {
  (ok ? checks_ok : checks_failed).fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(health_mu_);
  last_check_.assign(detail);
  if (ok) {
    consecutive_failed_ = 0;
    ++consecutive_ok_;
    return consecutive_ok_ >= rise && set_up(true, now_ms);
  }
  consecutive_ok_ = 0;
  ++consecutive_failed_;
  if (consecutive_failed_ < fall || !set_up(false, now_ms)) return false;
  passive_down_ms_.reset();  // down by the checks: only they bring it back
  return true;
}

bool BackendState::checks_stopped(int64_t now_ms) {
  std::lock_guard lock(health_mu_);
  consecutive_ok_ = 0;
  consecutive_failed_ = 0;
  last_check_.clear();
  return !passive_down_ms_ && set_up(true, now_ms);
}

std::string BackendState::last_check() const {
  std::lock_guard lock(health_mu_);
  return last_check_;
}

BackendRegistry::BackendRegistry() = default;

BackendRegistry::~BackendRegistry() {
  for (auto& c : chunks_) delete[] c.load(std::memory_order_relaxed);
}

std::shared_ptr<BackendState> BackendRegistry::get_or_create(const std::string& name) {
  std::lock_guard lock(mu_);
  auto it = by_name_.find(name);
  if (it != by_name_.end()) return it->second;
  const uint32_t id = next_id_++;
  auto state = std::make_shared<BackendState>(name, id);
  by_name_.emplace(name, state);
  const uint32_t chunk = id >> kChunkBits;
  if (chunk < kChunks) {
    Chunk* c = chunks_[chunk].load(std::memory_order_relaxed);
    if (c == nullptr) {
      c = new Chunk[1];
      for (auto& slot : *c) slot.store(nullptr, std::memory_order_relaxed);
      chunks_[chunk].store(c, std::memory_order_release);
    }
    (*c)[id & (kChunkSize - 1)].store(state.get(), std::memory_order_release);
  }
  return state;
}

std::shared_ptr<BackendState> BackendRegistry::by_id(uint32_t id) const {
  BackendState* raw = find(id);
  if (raw == nullptr) return nullptr;
  std::lock_guard lock(mu_);
  auto it = by_name_.find(raw->name);
  return it == by_name_.end() ? nullptr : it->second;
}

BackendState* BackendRegistry::find(uint32_t id) const {
  const uint32_t chunk = id >> kChunkBits;
  if (chunk >= kChunks) return nullptr;
  Chunk* c = chunks_[chunk].load(std::memory_order_acquire);
  return c == nullptr ? nullptr : (*c)[id & (kChunkSize - 1)].load(std::memory_order_acquire);
}

}  // namespace limpet::balancer
