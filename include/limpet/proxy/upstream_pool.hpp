// Per-worker keep-alive pool of idle upstream connections, per backend. An idle connection keeps
// reading so a backend close is noticed at once; it is dropped after the idle timeout. Keys are
// backend id + address, so a renumbered backend never gets its old connections. Owning worker only.
//
// The newest connection is handed out first (LIFO), and the pool remembers since when each one
// is idle: a request that may not be sent twice asks only for a connection idle a short while,
// since a backend may be closing an older one just as the request travels (design: "Keep-alive
// that never loses a session" in doc/architecture.md).
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

  // The newest live idle connection for `key` if it has been idle at most `max_idle_ms` at
  // `now_ms` (the loop's clock), else nullptr, and then *too_old says whether there were idle
  // ones, all older. The caller becomes its delegate; the stream is still reading (no epoll
  // change per request).
  net::Stream* take(const std::string& key, uint64_t now_ms, uint64_t max_idle_ms = UINT64_MAX,
                    bool* too_old = nullptr);
  // Keep `stream` for reuse (at most max_idle per key) for idle_timeout_ms, else close it.
  void give(const std::string& key, net::Stream* stream, size_t max_idle, uint64_t idle_timeout_ms,
            uint64_t now_ms);
  void close_all();
  size_t idle_count() const { return idle_total_; }
  uint64_t reused() const { return reused_; }

  void on_data(net::Stream* s, std::string_view data) override;
  void on_end(net::Stream* s, int status) override;
  void on_writable(net::Stream*) override {}
  void on_closed(net::Stream* s) override;
  void on_timeout(net::Stream* s) override;

 private:
  struct Idle {
    net::Stream* stream;
    uint64_t since_ms;
  };
  void drop(net::Stream* s);  // remove from its list and close
  std::unordered_map<std::string, std::vector<Idle>> idle_;
  size_t idle_total_ = 0;
  uint64_t reused_ = 0;
};

}  // namespace limpet::proxy
