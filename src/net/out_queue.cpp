#include "limpet/net/out_queue.hpp"

namespace limpet::net {

struct OutQueue::WriteReq {
  uv_write_t req;
  OutQueue* owner;
  std::string data;
};

void OutQueue::attach(uv_stream_t* stream) {
  stream_ = stream;
  std::deque<std::string> waiting;
  waiting.swap(queue_);
  queued_ = 0;
  for (const auto& chunk : waiting) submit(chunk);
}

void OutQueue::write(std::string_view data) {
  if (data.empty()) return;
  if (stream_ == nullptr) {
    queue_.emplace_back(data);
    queued_ += data.size();
    if (above_high_water()) was_high_ = true;
    return;
  }
  submit(data);
}

void OutQueue::submit(std::string_view data) {
  if (in_flight_ == 0) {
    uv_buf_t buf = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    int n = uv_try_write(stream_, &buf, 1);
    if (n > 0) {
      sent_ += static_cast<size_t>(n);
      data.remove_prefix(static_cast<size_t>(n));
    }
    if (data.empty()) return;
  }
  auto* req = new WriteReq{uv_write_t{}, this, std::string(data)};
  req->req.data = req;
  uv_buf_t buf = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
  int rc = uv_write(&req->req, stream_, &buf, 1, on_write_cb);
  if (rc != 0) {
    // Refused at once (the stream was shut down or is closing: states its owner caused), so
    // the bytes are dropped without a callback: reporting it from inside write() would tear the
    // owner down in the middle of its own call chain. Peer failures arrive asynchronously
    // through on_write_cb.
    delete req;
    return;
  }
  in_flight_ += data.size();
  sent_ += data.size();
  if (above_high_water()) was_high_ = true;
}

void OutQueue::on_write_cb(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  w->owner->on_write(w, status);
}

void OutQueue::on_write(WriteReq* req, int status) {
  in_flight_ -= req->data.size();
  delete req;
  if (status != 0) {
    if (status != UV_ECANCELED && on_error) on_error(status);
    return;
  }
  note_progress();
}

void OutQueue::note_progress() {
  if ((was_high_ && pending() < kLowWater) || drained()) {
    was_high_ = false;
    if (on_writable) on_writable();
  }
}

}  // namespace limpet::net
