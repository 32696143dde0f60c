#include "limpet/proxy/upstream_pool.hpp"

#include <algorithm>

namespace limpet::proxy {
namespace {

// The pool remembers which list an idle stream is on through Stream::user_data.
const std::string& key_of(net::Stream* s) { return *static_cast<const std::string*>(s->user_data); }

}  // namespace

net::Stream* UpstreamPool::take(const std::string& key, uint64_t now_ms, uint64_t max_idle_ms,
                               bool* too_old) {
  if (too_old != nullptr) *too_old = false;
  auto it = idle_.find(key);
  if (it == idle_.end() || it->second.empty()) return nullptr;
  if (now_ms - it->second.back().since_ms > max_idle_ms) {  // the newest is the freshest
    if (too_old != nullptr) *too_old = true;
    return nullptr;
  }
  net::Stream* s = it->second.back().stream;
  it->second.pop_back();
  --idle_total_;
  ++reused_;
  // Still reading: the caller, its new delegate, receives the response.
  s->clear_timeout();
  s->set_delegate(nullptr);
  s->user_data = nullptr;
  return s;
}

void UpstreamPool::give(const std::string& key, net::Stream* stream, size_t max_idle,
                        uint64_t idle_timeout_ms, uint64_t now_ms) {
  auto& list = idle_[key];
  if (list.size() >= max_idle || stream->closing()) {
    stream->set_delegate(nullptr);
    stream->close();
    return;
  }
  auto node = idle_.find(key);
  stream->user_data = const_cast<std::string*>(&node->first);
  stream->set_delegate(this);
  stream->set_timeout(idle_timeout_ms);
  stream->start_reading();
  list.push_back({stream, now_ms});
  ++idle_total_;
}

void UpstreamPool::drop(net::Stream* s) {
  auto it = idle_.find(key_of(s));
  if (it != idle_.end()) {
    auto& list = it->second;
    auto pos = std::find_if(list.begin(), list.end(), [s](const Idle& i) { return i.stream == s; });
    if (pos != list.end()) {
      list.erase(pos);
      --idle_total_;
    }
  }
  s->user_data = nullptr;
  s->set_delegate(nullptr);
  s->close();
}

// An idle backend connection must say nothing; anything it sends means it is unusable.
void UpstreamPool::on_data(net::Stream* s, std::string_view) { drop(s); }
void UpstreamPool::on_end(net::Stream* s, int) { drop(s); }
void UpstreamPool::on_timeout(net::Stream* s) { drop(s); }
void UpstreamPool::on_closed(net::Stream*) {}

void UpstreamPool::close_all() {
  for (auto& [key, list] : idle_) {
    for (const Idle& i : list) {
      i.stream->user_data = nullptr;
      i.stream->set_delegate(nullptr);
      i.stream->close();
    }
    list.clear();
  }
  idle_total_ = 0;
}

}  // namespace limpet::proxy
