// A TCP connection on a worker loop: the uv_tcp_t, the outgoing queue, reads into borrowed pool
// buffers (nothing held while idle), and a timer created on the first set_timeout (streams whose
// owner keeps time elsewhere carry none). Heap-allocated and self-deleting: close() closes the
// handles and the object frees itself in the last close callback, after telling its delegate.
// Owning worker only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "limpet/net/byte_stream.hpp"
#include "limpet/net/out_queue.hpp"
#include "limpet/net/stream_filter.hpp"
#include "limpet/util/buffer_pool.hpp"

namespace limpet::net {

class Stream;

class StreamDelegate {
 public:
  virtual ~StreamDelegate() = default;
  virtual void on_data(Stream* s, std::string_view data) = 0;
  // EOF (status UV_EOF) or a read error.
  virtual void on_end(Stream* s, int status) = 0;
  // Pending output fell under the low-water mark, or drained.
  virtual void on_writable(Stream* s) = 0;
  // Final callback: the stream is about to be freed.
  virtual void on_closed(Stream* s) = 0;
  // The stream's timer fired.
  virtual void on_timeout(Stream* s) = 0;
};

class Stream final : public ByteStream, private OutQueueListener {
 public:
  Stream(uv_loop_t* loop, BufferPool* buffers);
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  uv_tcp_t* tcp() { return &tcp_; }
  uv_stream_t* uv() { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  void set_delegate(StreamDelegate* delegate) { delegate_ = delegate; }
  StreamDelegate* delegate() const { return delegate_; }

  // Outgoing connection; `on_done(status)` runs on the loop. The queue attaches on success.
  // `preamble` (a PROXY protocol header) is the first thing on the wire once connected: before
  // the filter's first flight, never through the filter, and not part of what take_queued()
  // hands back when the connect fails.
  int connect(const sockaddr* addr, std::function<void(int status)> on_done, std::string preamble = {});
  // The stream was accepted by a listener: attach the queue now.
  void accepted();
  void set_nodelay();

  void start_reading() override;
  void stop_reading() override;
  bool reading() const { return reading_; }

  // Install before accepted()/connect: every byte then goes through `filter` (TLS).
  void set_filter(std::unique_ptr<StreamFilter> filter);
  // The same on an accepted stream whose first bytes were the owner's (a PROXY protocol header
  // precedes the TLS ClientHello): the filter starts now, and `already_read`, the rest of the
  // read that ended the preamble, goes through it first (plaintext reaches on_data from here).
  void attach_filter(std::unique_ptr<StreamFilter> filter, std::string_view already_read);
  bool filtered() const { return filter_ != nullptr; }
  // What the filter's handshake agreed on (TLS ALPN), empty without one; known from the first
  // plaintext byte on.
  std::string_view application_protocol() const;

  using ByteStream::write;
  // The pieces in order, gathered into one system call when the socket takes them all.
  void write(std::span<const std::string_view> parts) override;
  size_t pending() const override { return out_.pending(); }
  OutQueue& out() { return out_; }
  // Half-close our sending side once everything queued has been written.
  void shutdown_after_writes() override;
  bool write_side_shut() const override { return shutdown_wanted_; }

  // One deadline per stream: on_timeout runs `ms` from now unless set again or cleared first.
  // Moving the deadline later (every request, every tunnel message) touches no timer: the timer
  // fires at the old deadline and sleeps again until the new one.
  void set_timeout(uint64_t ms);
  void clear_timeout() {
    if (timer_ != nullptr) timer_->deadline = 0;
  }
  // Frees the timer (an idle tunnel, watched by its worker's sweep instead, holds none); a later
  // set_timeout creates it again.
  void drop_timer();

  void close();
  bool closing() const override { return closing_; }

  uint64_t bytes_read() const { return bytes_read_; }
  void* user_data = nullptr;  // free for the owner (the pool keys idle streams with it)

 private:
  struct Filtering;
  struct ConnectRequest;
  ~Stream() override;  // only via close()
  void on_queue_writable() override;
  void on_queue_error(int status) override;
  static void on_alloc_cb(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void on_read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_connect_cb(uv_connect_t* req, int status);
  static void on_timer_cb(uv_timer_t* t);
  static void on_shutdown_cb(uv_shutdown_t* req, int status);
  static void on_close_cb(uv_handle_t* h);
  void maybe_shutdown();
  void start_filter();
  void deliver(std::string_view wire);

  uv_tcp_t tcp_{};
  // Created by the first set_timeout; the deadlines live with it, so a stream without a timer
  // carries only the pointer.
  struct Timer {
    uv_timer_t handle;   // first: a uv_timer_t* is a Timer*
    uint64_t deadline;   // loop time (ms) of the next on_timeout; 0: none
    uint64_t due;        // loop time the timer is armed for; 0: not armed
  };
  Timer* timer_ = nullptr;
  BufferPool* buffers_;
  StreamDelegate* delegate_ = nullptr;
  OutQueue out_;
  std::unique_ptr<Filtering> filter_;  // TLS streams only
  uint64_t bytes_read_ = 0;
  // Counts the socket in net::fd_budget() once it exists (accepted, or a connect started).
  void count_fd();
  // Two of these live in every tunnel: the handle count and the flags share one word.
  uint8_t open_handles_ = 1;
  bool counted_fd_ : 1 = false;
  bool filter_started_ : 1 = false;  // writes go through the filter from here on
  bool filter_eof_ : 1 = false;      // the filter's end of stream was reported
  bool reading_ : 1 = false;
  bool closing_ : 1 = false;
  bool shutdown_wanted_ : 1 = false;
  bool shutdown_sent_ : 1 = false;
  bool shutdown_notified_ : 1 = false;  // the filter's close_notify is queued
};

}  // namespace limpet::net
