#include "limpet/net/stream.hpp"

namespace limpet::net {
namespace {

// A filter's scratch strings keep what one call needed; past this they are given back after use,
// so an idle TLS connection or tunnel holds no large buffer (design §6).
constexpr size_t kScratchKeep = 4 * 1024;

void trim_scratch(std::string& scratch) {
  if (scratch.capacity() > kScratchKeep) std::string().swap(scratch);
}

}  // namespace

Stream::Stream(uv_loop_t* loop, BufferPool* buffers) : buffers_(buffers) {
  uv_tcp_init(loop, &tcp_);
  uv_timer_init(loop, &timer_);
  tcp_.data = this;
  timer_.data = this;
  out_.on_writable = [this] {
    maybe_shutdown();
    if (delegate_ && !closing_) delegate_->on_writable(this);
  };
  out_.on_error = [this](int status) {
    if (delegate_ && !closing_) delegate_->on_end(this, status);
  };
}

Stream::~Stream() = default;

void Stream::write(std::string_view data) {
  // Until the filter starts (connect in flight) plaintext waits in the queue like unfiltered bytes:
  // backpressure counts it, and a failed connect hands it back through take_queued().
  if (!filter_ || !filter_started_) {
    out_.write(data);
    return;
  }
  filter_wire_.clear();
  bool ok = filter_->on_plain(data, &filter_wire_);
  out_.write(filter_wire_);
  trim_scratch(filter_wire_);
  if (!ok && delegate_ && !closing_) delegate_->on_end(this, UV_EPROTO);
}

void Stream::start_filter() {
  if (!filter_) return;
  filter_started_ = true;
  filter_wire_.clear();
  bool ok = filter_->start(&filter_wire_);
  out_.write(filter_wire_);
  if (!ok && delegate_ && !closing_) delegate_->on_end(this, UV_EPROTO);
}

// Bytes from the socket, through the filter if there is one.
void Stream::deliver(std::string_view wire) {
  if (!filter_) {
    delegate_->on_data(this, wire);
    return;
  }
  filter_plain_.clear();
  filter_wire_.clear();
  bool ok = filter_->on_wire(wire, &filter_plain_, &filter_wire_);
  out_.write(filter_wire_);
  if (!filter_plain_.empty()) delegate_->on_data(this, filter_plain_);
  trim_scratch(filter_plain_);
  trim_scratch(filter_wire_);
  if (!delegate_ || closing_) return;
  if (!ok) {
    delegate_->on_end(this, UV_EPROTO);
  } else if (filter_->peer_closed() && !filter_eof_) {
    filter_eof_ = true;
    stop_reading();
    delegate_->on_end(this, UV_EOF);
  }
}

int Stream::connect(const sockaddr* addr, std::function<void(int)> on_done) {
  on_connect_ = std::move(on_done);
  connect_req_.data = this;
  return uv_tcp_connect(&connect_req_, &tcp_, addr, on_connect_cb);
}

void Stream::on_connect_cb(uv_connect_t* req, int status) {
  auto* self = static_cast<Stream*>(req->data);
  if (status == UV_ECANCELED || self->closing_) return;
  if (status == 0) {
    // Plaintext queued during the connect follows the filter's first flight, encrypted.
    std::deque<std::string> early;
    if (self->filter_) early = self->out_.take_queued();
    self->out_.attach(self->uv());
    self->start_filter();
    for (const auto& chunk : early) self->write(chunk);
  }
  auto done = std::move(self->on_connect_);
  if (done) done(status);
}

void Stream::accepted() {
  out_.attach(uv());
  start_filter();
}

void Stream::set_nodelay() { uv_tcp_nodelay(&tcp_, 1); }

void Stream::start_reading() {
  if (reading_ || closing_) return;
  if (uv_read_start(uv(), on_alloc_cb, on_read_cb) == 0) reading_ = true;
}

void Stream::stop_reading() {
  if (!reading_) return;
  uv_read_stop(uv());
  reading_ = false;
}

void Stream::on_alloc_cb(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* self = static_cast<Stream*>(h->data);
  buf->base = self->buffers_->acquire();
  buf->len = BufferPool::kBufferSize;
}

void Stream::on_read_cb(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* self = static_cast<Stream*>(s->data);
  if (nread > 0) {
    self->bytes_read_ += static_cast<uint64_t>(nread);
    if (self->delegate_ && !self->closing_) {
      self->deliver(std::string_view(buf->base, static_cast<size_t>(nread)));
    }
  } else if (nread < 0) {
    self->stop_reading();
    if (self->delegate_ && !self->closing_) self->delegate_->on_end(self, static_cast<int>(nread));
  }
  // The delegate copies what it cannot forward at once, so the buffer goes back immediately.
  self->buffers_->release(buf->base);
}

void Stream::shutdown_after_writes() {
  shutdown_wanted_ = true;
  maybe_shutdown();
}

void Stream::maybe_shutdown() {
  if (!shutdown_wanted_ || shutdown_sent_ || closing_) return;
  if (filter_ && !shutdown_notified_) {
    shutdown_notified_ = true;
    filter_wire_.clear();
    filter_->on_shutdown(&filter_wire_);
    out_.write(filter_wire_);
  }
  if (!out_.drained()) return;
  shutdown_sent_ = true;
  shutdown_req_.data = this;
  if (uv_shutdown(&shutdown_req_, uv(), on_shutdown_cb) != 0) shutdown_sent_ = false;
}

void Stream::on_shutdown_cb(uv_shutdown_t*, int) {}

void Stream::set_timeout(uint64_t ms) {
  if (closing_) return;
  uv_timer_start(&timer_, on_timer_cb, ms, 0);
}

void Stream::clear_timeout() { uv_timer_stop(&timer_); }

void Stream::on_timer_cb(uv_timer_t* t) {
  auto* self = static_cast<Stream*>(t->data);
  if (self->delegate_ && !self->closing_) self->delegate_->on_timeout(self);
}

void Stream::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  out_.detach();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close_cb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), on_close_cb);
}

void Stream::on_close_cb(uv_handle_t* h) {
  auto* self = static_cast<Stream*>(h->data);
  if (--self->open_handles_ > 0) return;
  if (self->delegate_) self->delegate_->on_closed(self);
  delete self;
}

}  // namespace limpet::net
