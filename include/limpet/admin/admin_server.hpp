// The admin listener (loopback by default), served on the main thread's loop: GET /metrics
// (Prometheus), GET /status (JSON), GET / (HTML status page), and POST /backends/NAME/ACTION
// (drain, enable, disable) guarded by the configured token, compared in constant time.
// One request per connection. Main thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

#include "limpet/admin/metrics.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "limpet/util/result.hpp"

namespace limpet::admin {

class AdminServer {
 public:
  struct Hooks {
    std::function<MetricsSnapshot()> collect;
    // Applies ACTION to backend NAME; fails with a message when there is no such backend.
    std::function<Status(const std::string& backend, const std::string& action)> backend_action;
  };

  AdminServer(uv_loop_t* loop, Hooks hooks);
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;
  ~AdminServer();

  Status listen(const std::string& host, uint16_t port);
  // Binary upgrade: serve a listening socket the old process handed over (ownership passes).
  Status listen_fd(int fd);
  // The listening socket's descriptor (for the hand-over), -1 when not listening.
  int fd() const;
  void set_token(std::string token) { token_ = std::move(token); }
  void close();

  // Routing, separate from I/O for tests: returns a complete HTTP response.
  std::string handle(const std::string& method, const std::string& path,
                     const std::string& authorization);

 private:
  static void on_connection_cb(uv_stream_t* server, int status);
  bool token_matches(const std::string& authorization) const;

  uv_loop_t* loop_;
  Hooks hooks_;
  std::string token_;
  BufferPool buffers_{4};
  uv_tcp_t* listener_ = nullptr;
};

// Constant-time comparison: the time taken does not depend on where the strings differ.
bool constant_time_equals(const std::string& expected, const std::string& given);

}  // namespace limpet::admin
