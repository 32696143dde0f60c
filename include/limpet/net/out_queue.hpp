// Ordered outgoing bytes for one stream, with backpressure accounting. Tries uv_try_write first
// and copies only what the kernel did not take; bytes written before the stream is attached
// (connect still in flight) wait in the queue. The owner of the stream owns its OutQueue and
// destroys it only after the handle's close callback (so every write callback has run).
// Owning worker only.
#pragma once

#include <uv.h>

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <string_view>
#include <utility>

namespace limpet::net {

class OutQueue {
 public:
  // Pending bytes above which the producer should stop reading its source, and below which
  // it may resume (design §6).
  static constexpr size_t kHighWater = 256 * 1024;
  static constexpr size_t kLowWater = 64 * 1024;

  // Called when pending bytes fall under kLowWater after having been above kHighWater, and when
  // everything has been written (drained()).
  std::function<void()> on_writable;
  // Called, never from inside write(), on a write error (the peer is gone).
  std::function<void(int status)> on_error;

  OutQueue() = default;
  OutQueue(const OutQueue&) = delete;
  OutQueue& operator=(const OutQueue&) = delete;

  // Start writing to `stream`. Queued bytes are flushed now.
  void attach(uv_stream_t* stream);
  // Forget the stream (it is being closed); in-flight writes complete with an error status.
  void detach() { stream_ = nullptr; }

  void write(std::string_view data);
  // Bytes written before attach(), handed over (a connect failed: they go to another stream).
  std::deque<std::string> take_queued() {
    queued_ = 0;
    return std::exchange(queue_, {});
  }
  // Bytes written since attach that reached the socket or libuv (for "was anything sent?").
  size_t bytes_sent() const { return sent_; }
  size_t pending() const { return queued_ + in_flight_; }
  bool above_high_water() const { return pending() > kHighWater; }
  bool drained() const { return pending() == 0; }

 private:
  struct WriteReq;
  static void on_write_cb(uv_write_t* req, int status);
  void on_write(WriteReq* req, int status);
  void submit(std::string_view data);
  void note_progress();

  uv_stream_t* stream_ = nullptr;
  std::deque<std::string> queue_;  // written before attach()
  size_t queued_ = 0;
  size_t in_flight_ = 0;  // handed to uv_write, not completed
  size_t sent_ = 0;
  bool was_high_ = false;
};

}  // namespace limpet::net
