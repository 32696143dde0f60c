#include "limpet/net/out_queue.hpp"

#include <algorithm>

namespace limpet::net {
namespace {

size_t total_size(std::span<const std::string_view> parts) {
  size_t n = 0;
  for (auto p : parts) n += p.size();
  return n;
}

// The bytes of `parts` from offset `skip` on, in one string.
std::string concat_from(std::span<const std::string_view> parts, size_t skip, size_t total) {
  std::string out;
  out.reserve(total - skip);
  for (auto p : parts) {
    size_t drop = std::min(skip, p.size());
    out.append(p.substr(drop));
    skip -= drop;
  }
  return out;
}

}  // namespace

struct OutQueue::WriteReq {
  uv_write_t req;
  OutQueue* owner;
  std::string data;
};

void OutQueue::attach(uv_stream_t* stream) {
  stream_ = stream;
  if (!early_) return;
  std::unique_ptr<Early> waiting = std::move(early_);
  for (const auto& chunk : waiting->chunks) write(chunk);
}

void OutQueue::write(std::span<const std::string_view> parts) {
  const size_t total = total_size(parts);
  if (total == 0) return;
  if (stream_ == nullptr) {
    if (!early_) early_ = std::make_unique<Early>();
    early_->chunks.push_back(concat_from(parts, 0, total));
    early_->bytes += total;
    if (above_high_water()) was_high_ = true;
    return;
  }
  submit(parts, total);
}

void OutQueue::submit(std::span<const std::string_view> parts, size_t total) {
  size_t written = 0;
  if (in_flight_ == 0 && parts.size() <= kMaxParts) {
    uv_buf_t bufs[kMaxParts];
    for (size_t i = 0; i < parts.size(); ++i) {
      bufs[i] = uv_buf_init(const_cast<char*>(parts[i].data()), static_cast<unsigned>(parts[i].size()));
    }
    int n = uv_try_write(stream_, bufs, static_cast<unsigned>(parts.size()));
    if (n > 0) {
      written = static_cast<size_t>(n);
      sent_ += written;
    }
    if (written == total) return;
  }
  auto* req = new WriteReq{uv_write_t{}, this, concat_from(parts, written, total)};
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
  in_flight_ += req->data.size();
  sent_ += req->data.size();
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
    if (status != UV_ECANCELED && listener_) listener_->on_queue_error(status);
    return;
  }
  note_progress();
}

void OutQueue::note_progress() {
  if ((was_high_ && pending() < kLowWater) || drained()) {
    was_high_ = false;
    if (listener_) listener_->on_queue_writable();
  }
}

}  // namespace limpet::net
