// The admin listener (loopback by default), served on the main thread's loop: GET /metrics
// (Prometheus), GET /status (JSON), GET / (HTML status page), and POST /backends/NAME/ACTION
// (drain, enable, disable), PUT and DELETE /upstreams/UP/backends/NAME (add, re-weight, remove)
// guarded by the configured token, compared in constant time.
// One request per connection. Main thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "limpet/admin/metrics.hpp"
#include "limpet/util/buffer_pool.hpp"
#include "limpet/util/result.hpp"

namespace limpet::admin {

// PUT or DELETE /upstreams/UP/backends/NAME, with what its body says.
struct BackendChange {
  enum class Kind { kPut, kDelete };
  Kind kind = Kind::kPut;
  std::string upstream;
  std::string backend;
  std::optional<std::string> address;
  std::optional<int64_t> weight;
};

struct Reply {
  int status = 200;
  std::string message;
};

// A PUT's body: a JSON object {"address": "10.0.0.5:3000", "weight": 2} or a form
// "address=10.0.0.5:3000&weight=2"; both keys optional, no others. Fails saying what is wrong.
Status parse_backend_body(std::string_view body, BackendChange& out);

class AdminServer {
 public:
  struct Hooks {
    std::function<MetricsSnapshot()> collect;
    // Applies ACTION to backend NAME; fails with a message when there is no such backend.
    std::function<Status(const std::string& backend, const std::string& action)> backend_action;
    std::function<Reply(const BackendChange& change)> backend_change;
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
                     const std::string& authorization, std::string_view body = {});

 private:
  static void on_connection_cb(uv_stream_t* server, int status);
  bool token_matches(const std::string& authorization) const;
  std::string handle_change(const std::string& method, std::string_view rest, std::string_view body);

  uv_loop_t* loop_;
  Hooks hooks_;
  std::string token_;
  BufferPool buffers_{4};
  uv_tcp_t* listener_ = nullptr;
};

// Constant-time comparison: the time taken does not depend on where the strings differ.
bool constant_time_equals(const std::string& expected, const std::string& given);

}  // namespace limpet::admin
