// Per-worker pool of fixed-size read buffers. A read borrows one in the libuv alloc callback and
// returns it in the read callback, so an idle connection holds no buffer. Owning worker only.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

namespace limpet {

class BufferPool {
 public:
  static constexpr size_t kBufferSize = 64 * 1024;

  explicit BufferPool(size_t max_cached = 256) : max_cached_(max_cached) {}
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;
  ~BufferPool() {
    for (char* b : free_) delete[] b;
  }

  char* acquire() {
    ++outstanding_;
    if (free_.empty()) return new char[kBufferSize];
    char* b = free_.back();
    free_.pop_back();
    return b;
  }

  void release(char* buffer) {
    if (buffer == nullptr) return;
    --outstanding_;
    if (free_.size() < max_cached_) {
      free_.push_back(buffer);
    } else {
      delete[] buffer;
    }
  }

  size_t outstanding() const { return outstanding_; }
  size_t cached() const { return free_.size(); }

 private:
  size_t max_cached_;
  size_t outstanding_ = 0;
  std::vector<char*> free_;
};

}  // namespace limpet
