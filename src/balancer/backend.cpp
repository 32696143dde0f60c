#include "limpet/balancer/backend.hpp"

namespace limpet::balancer {

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
