#include "limpet/net/stream.hpp"

#include <sys/socket.h>

#include <vector>

#include "limpet/net/fd_budget.hpp"

namespace limpet::net {
namespace {

// A filter's scratch strings keep what one call needed; past this they are given back after use,
// so an idle TLS connection or tunnel holds no large buffer (design §6).
constexpr size_t kScratchKeep = 4 * 1024;
// Parts of one write up to this size go through a filter together (one TLS record's plaintext).
constexpr size_t kGatherMax = 16 * 1024;

void trim_scratch(std::string& scratch) {
  if (scratch.capacity() > kScratchKeep) std::string().swap(scratch);
}

}  // namespace

// The filter and its scratch buffers (reused across reads while small), allocated only for
// filtered streams so that a plain stream carries none of it.
struct Stream::Filtering {
  std::unique_ptr<StreamFilter> filter;
  std::string plain;
  std::string wire;
};

// Connect and shutdown requests live on the heap while in flight only: a connection makes each
// at most once, and an idle stream (a tunnel) then carries neither.
struct Stream::ConnectRequest {
  uv_connect_t req;
  Stream* stream;
  std::function<void(int)> on_done;
  std::string preamble;
};

Stream::Stream(uv_loop_t* loop, BufferPool* buffers) : buffers_(buffers), out_(this) {
  uv_tcp_init(loop, &tcp_);
  tcp_.data = this;
}

Stream::~Stream() = default;

void Stream::set_filter(std::unique_ptr<StreamFilter> filter) {
  filter_ = std::make_unique<Filtering>();
  filter_->filter = std::move(filter);
}

void Stream::attach_filter(std::unique_ptr<StreamFilter> filter, std::string_view already_read) {
  set_filter(std::move(filter));
  start_filter();
  if (!already_read.empty() && delegate_ && !closing_) deliver(already_read);
}

void Stream::on_queue_writable() {
  maybe_shutdown();
  if (delegate_ && !closing_) delegate_->on_writable(this);
}

void Stream::on_queue_error(int status) {
  if (delegate_ && !closing_) delegate_->on_end(this, status);
}

void Stream::write(std::span<const std::string_view> parts) {
  // Until the filter starts (connect in flight) plaintext waits in the queue like unfiltered bytes:
  // backpressure counts it, and a failed connect hands it back through take_queued().
  if (!filter_ || !filter_started_) {
    out_.write(parts);
    return;
  }
  std::string& wire = filter_->wire;
  wire.clear();
  bool ok = true;
  size_t total = 0;
  for (auto part : parts) total += part.size();
  if (parts.size() > 1 && total <= kGatherMax) {
    // One record for a small head and body, as they would leave a plain socket in one write: a
    // record per part cost an encryption and 22 bytes more per response (seen in bench/tls).
    // Per thread, not per stream: an idle connection keeps no buffer.
    thread_local std::string gathered;
    gathered.clear();
    for (auto part : parts) gathered.append(part);
    ok = filter_->filter->on_plain(gathered, &wire);
    trim_scratch(gathered);
  } else {
    for (auto part : parts) ok = ok && filter_->filter->on_plain(part, &wire);
  }
  out_.write(wire);
  trim_scratch(wire);
  if (!ok && delegate_ && !closing_) delegate_->on_end(this, UV_EPROTO);
}

void Stream::start_filter() {
  if (!filter_) return;
  filter_started_ = true;
  filter_->wire.clear();
  bool ok = filter_->filter->start(&filter_->wire);
  out_.write(filter_->wire);
  if (!ok && delegate_ && !closing_) delegate_->on_end(this, UV_EPROTO);
}

// Bytes from the socket, through the filter if there is one.
void Stream::deliver(std::string_view wire) {
  if (!filter_) {
    delegate_->on_data(this, wire);
    return;
  }
  Filtering& f = *filter_;
  f.plain.clear();
  f.wire.clear();
  bool ok = f.filter->on_wire(wire, &f.plain, &f.wire);
  out_.write(f.wire);
  if (!f.plain.empty()) delegate_->on_data(this, f.plain);
  trim_scratch(f.plain);
  trim_scratch(f.wire);
  if (!delegate_ || closing_) return;
  if (!ok) {
    delegate_->on_end(this, UV_EPROTO);
  } else if (f.filter->peer_closed() && !filter_eof_) {
    filter_eof_ = true;
    stop_reading();
    delegate_->on_end(this, UV_EOF);
  }
}

int Stream::connect(const sockaddr* addr, std::function<void(int)> on_done, std::string preamble) {
  auto* request = new ConnectRequest{uv_connect_t{}, this, std::move(on_done), std::move(preamble)};
  request->req.data = request;
  int rc = uv_tcp_connect(&request->req, &tcp_, addr, on_connect_cb);
  count_fd();  // the socket exists from here, even when the connect failed at once
  if (rc != 0) delete request;
  return rc;
}

void Stream::on_connect_cb(uv_connect_t* req, int status) {
  std::unique_ptr<ConnectRequest> request(static_cast<ConnectRequest*>(req->data));
  Stream* self = request->stream;
  if (status == UV_ECANCELED || self->closing_) return;
  if (status == 0) {
    // Plaintext queued during the connect follows the preamble and the filter's first flight,
    // encrypted.
    std::vector<std::string> early;
    if (self->filter_ || !request->preamble.empty()) early = self->out_.take_queued();
    self->out_.attach(self->uv());
    self->out_.write(request->preamble);
    self->start_filter();
    for (const auto& chunk : early) self->write(chunk);
  }
  if (request->on_done) request->on_done(status);
}

void Stream::count_fd() {
  uv_os_fd_t fd;
  if (counted_fd_ || uv_fileno(reinterpret_cast<const uv_handle_t*>(&tcp_), &fd) != 0) return;
  counted_fd_ = true;
  fd_budget().opened();
}

void Stream::accepted() {
  count_fd();
  out_.attach(uv());
  start_filter();
}

std::string_view Stream::application_protocol() const {
  return filter_ != nullptr ? filter_->filter->application_protocol() : std::string_view();
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
    filter_->wire.clear();
    filter_->filter->on_shutdown(&filter_->wire);
    out_.write(filter_->wire);
  }
  if (!out_.drained()) return;
  uv_os_fd_t fd;
  if (out_.attached() && uv_fileno(reinterpret_cast<uv_handle_t*>(&tcp_), &fd) == 0) {
    // Connected and nothing left in libuv's queue either: half-close now. uv_shutdown would
    // first wait for writability (two epoll changes and a loop turn per tunnel or lingering
    // close). A failure (the peer reset) shows on the next read.
    ::shutdown(fd, SHUT_WR);
    shutdown_sent_ = true;
    return;
  }
  auto* req = new uv_shutdown_t;  // the connect is in flight: libuv shuts down after it
  shutdown_sent_ = uv_shutdown(req, uv(), on_shutdown_cb) == 0;
  if (!shutdown_sent_) delete req;
}

void Stream::on_shutdown_cb(uv_shutdown_t* req, int) { delete req; }

void Stream::set_timeout(uint64_t ms) {
  if (closing_) return;
  if (timer_ == nullptr) {
    timer_ = new Timer{};
    uv_timer_init(tcp_.loop, &timer_->handle);
    timer_->handle.data = this;
    ++open_handles_;
  }
  const uint64_t now = uv_now(tcp_.loop);
  timer_->deadline = now + ms;
  if (timer_->due == 0 || timer_->due > timer_->deadline) {
    timer_->due = timer_->deadline;
    uv_timer_start(&timer_->handle, on_timer_cb, ms, 0);
  }
}

void Stream::drop_timer() {
  if (timer_ == nullptr || closing_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_->handle), on_close_cb);
  timer_ = nullptr;
}

void Stream::on_timer_cb(uv_timer_t* t) {
  auto* self = static_cast<Stream*>(t->data);
  Timer* timer = self->timer_;
  timer->due = 0;
  if (timer->deadline == 0 || self->closing_) return;
  const uint64_t now = uv_now(t->loop);
  if (now < timer->deadline) {
    // The deadline moved later since the timer was armed.
    timer->due = timer->deadline;
    uv_timer_start(t, on_timer_cb, timer->deadline - now, 0);
    return;
  }
  timer->deadline = 0;
  if (self->delegate_) self->delegate_->on_timeout(self);
}

void Stream::close() {
  if (closing_) return;
  closing_ = true;
  reading_ = false;
  out_.detach();
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), on_close_cb);  // closes the fd at once
  if (counted_fd_) fd_budget().closed();
  if (timer_ != nullptr) uv_close(reinterpret_cast<uv_handle_t*>(&timer_->handle), on_close_cb);
}

void Stream::on_close_cb(uv_handle_t* h) {
  auto* self = static_cast<Stream*>(h->data);
  if (h->type == UV_TIMER) delete reinterpret_cast<Timer*>(h);
  if (--self->open_handles_ > 0) return;
  if (self->delegate_) self->delegate_->on_closed(self);
  delete self;
}

}  // namespace limpet::net
