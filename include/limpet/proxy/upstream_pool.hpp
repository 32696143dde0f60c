// Per-worker keep-alive pool of idle upstream connections, per backend. An idle connection keeps
// reading so a backend close is noticed at once; it is dropped after the idle timeout. Keys are
// backend id + address, so a renumbered backend never gets its old connections. Owning worker only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "limpet/net/stream.hpp"

namespace limpet::proxy {

class UpstreamPool : public net::StreamDelegate {
 public:
  UpstreamPool() = default;
  UpstreamPool(const UpstreamPool&) = delete;
  UpstreamPool& operator=(const UpstreamPool&) = delete;

  // A live idle connection for `key`, or nullptr. The caller becomes its delegate; the stream is
  // still reading (no epoll change per request).
  net::Stream* take(const std::string& key);
  // Keep `stream` for reuse (at most max_idle per key), else close it.
  void give(const std::string& key, net::Stream* stream, size_t max_idle, uint64_t idle_timeout_ms);
  void close_all();
  size_t idle_count() const { return idle_total_; }
  uint64_t reused() const { return reused_; }

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream*) override {}
  void on_closed(net::Stream* s) override;
  void on_timeout(net::Stream* s) override;

 private:
  void drop(net::Stream* s);  // remove from its list and close
  std::unordered_map<std::string, std::vector<net::Stream*>> idle_;
  size_t idle_total_ = 0;
  uint64_t reused_ = 0;
};

}  // namespace limpet::proxy
