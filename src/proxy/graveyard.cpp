#include "limpet/proxy/graveyard.hpp"

namespace limpet::proxy {

void Graveyard::init(uv_loop_t* loop) {
  uv_check_init(loop, &check_);
  check_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  initialized_ = true;
}

void Graveyard::close() {
  free_all();
  if (!initialized_) return;
  initialized_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
}

void Graveyard::on_check_cb(uv_check_t* handle) {
  auto* self = static_cast<Graveyard*>(handle->data);
  self->free_all();
  uv_check_stop(handle);
}

void Graveyard::free_all() {
  // Freeing may bury more (a session's destructor closing streams does not, but be safe).
  while (!dead_.empty()) {
    auto dead = std::move(dead_);
    dead_.clear();
    for (auto& [object, destroy] : dead) destroy(object);
  }
}

}  // namespace limpet::proxy
