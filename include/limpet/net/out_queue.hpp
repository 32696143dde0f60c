// Ordered outgoing bytes for one stream, with backpressure accounting. Tries uv_try_write first
// and copies only what the kernel did not take; bytes written before the stream is attached
// (connect still in flight) wait in the queue. The owner of the stream owns its OutQueue and
// destroys it only after the handle's close callback (so every write callback has run).
// Owning worker only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace limpet::net {

// What an OutQueue reports to its owner (a plain interface: no std::function per stream).
class OutQueueListener {
 public:
  virtual ~OutQueueListener() = default;
  // Pending bytes fell under kLowWater after having been above kHighWater, or everything has
  // been written (drained()).
  virtual void on_queue_writable() = 0;
  // Never from inside write(): a write error (the peer is gone).
  virtual void on_queue_error(int status) = 0;
};

class OutQueue {
 public:
  // Pending bytes above which the producer should stop reading its source, and below which
  // it may resume (design §6).
  static constexpr size_t kHighWater = 256 * 1024;
  static constexpr size_t kLowWater = 64 * 1024;
  // Most pieces one gathered write takes (a response head, a chunk size line, data, CRLF).
  static constexpr size_t kMaxParts = 4;

  explicit OutQueue(OutQueueListener* listener = nullptr) : listener_(listener) {}
  OutQueue(const OutQueue&) = delete;
  OutQueue& operator=(const OutQueue&) = delete;

  // Start writing to `stream`. Queued bytes are flushed now.
  void attach(uv_stream_t* stream);
  // Forget the stream (it is being closed); in-flight writes complete with an error status.
  void detach() { stream_ = nullptr; }
  bool attached() const { return stream_ != nullptr; }

  void write(std::string_view data) { write(std::span<const std::string_view>(&data, 1)); }
  // The pieces in order, with one system call when the socket takes them all (at most
  // kMaxParts pieces).
  void write(std::span<const std::string_view> parts);
  // Bytes written before attach(), handed over (a connect failed: they go to another stream).
  std::vector<std::string> take_queued() {
    if (!early_) return {};
    return std::exchange(early_, nullptr)->chunks;
  }
  // Bytes written since attach that reached the socket or libuv (for "was anything sent?").
  size_t bytes_sent() const { return sent_; }
  size_t pending() const { return (early_ ? early_->bytes : 0) + in_flight_; }
  bool above_high_water() const { return pending() > kHighWater; }
  bool drained() const { return pending() == 0; }

 private:
  struct WriteReq;
  static void on_write_cb(uv_write_t* req, int status);
  void on_write(WriteReq* req, int status);
  void submit(std::span<const std::string_view> parts, size_t total);
  void note_progress();

  // Written before attach(): only a stream whose connect is in flight has any, so the others
  // (every accepted stream, every tunnel) carry the pointer alone.
  struct Early {
    std::vector<std::string> chunks;
    size_t bytes = 0;
  };

  OutQueueListener* listener_;
  uv_stream_t* stream_ = nullptr;
  std::unique_ptr<Early> early_;
  size_t in_flight_ = 0;  // handed to uv_write, not completed
  size_t sent_ = 0;
  bool was_high_ = false;
};

}  // namespace limpet::net
