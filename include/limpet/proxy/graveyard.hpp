// Objects torn down from inside their own callback chain (an HTTP session that turned into a
// tunnel while its exchange was on the stack) are buried here and freed at the end of the loop
// turn, never in place (design §4). One per worker; owning worker only.
#pragma once

#include <uv.h>

#include <memory>
#include <utility>
#include <vector>

namespace limpet::proxy {

class Graveyard {
 public:
  Graveyard() = default;
  Graveyard(const Graveyard&) = delete;
  Graveyard& operator=(const Graveyard&) = delete;
  ~Graveyard() { free_all(); }

  // The check handle runs only while something waits, and never keeps the loop alive.
  void init(uv_loop_t* loop);
  // After the loop stopped: frees what is left and closes the handle (run the loop once more).
  void close();

  template <class T>
  void bury(std::unique_ptr<T> object) {
    if (!object) return;
    dead_.emplace_back(object.release(), [](void* p) { delete static_cast<T*>(p); });
    if (initialized_) uv_check_start(&check_, on_check_cb);
  }

 private:
  static void on_check_cb(uv_check_t* handle);
  void free_all();

  uv_check_t check_{};
  std::vector<std::pair<void*, void (*)(void*)>> dead_;
  bool initialized_ = false;
};

}  // namespace limpet::proxy
