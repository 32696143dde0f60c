#include "limpet/admin/admin_server.hpp"

#include <memory>

#include "limpet/http/parser.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/util/log.hpp"

namespace limpet::admin {
namespace {

constexpr uint64_t kAdminTimeoutMs = 10000;

std::string response(int status, const char* reason, const char* type, const std::string& body) {
  return "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\nContent-Type: " + type +
         "\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n" + body;
}

std::string text(int status, const char* reason, const std::string& body) {
  return response(status, reason, "text/plain; charset=utf-8", body + "\n");
}

// One admin request: parse, answer, close.
class AdminConnection : public net::StreamDelegate, public http::ParserDelegate {
 public:
  AdminConnection(AdminServer* server, net::Stream* stream)
      : server_(server), stream_(stream), parser_(http::Parser::Kind::kRequest, {}, this) {
    stream_->set_delegate(this);
    stream_->accepted();
    stream_->set_timeout(kAdminTimeoutMs);
    stream_->start_reading();
  }

  void on_data(net::Stream*, std::string_view data) override {
    if (answered_) return;
    auto outcome = parser_.execute(data);
    if (outcome.state == http::Parser::State::kError) answer(http::simple_response(400, true));
  }
  void on_end(net::Stream*, int) override { stream_->close(); }
  void on_writable(net::Stream*) override {
    if (answered_ && stream_->out().drained()) stream_->close();
  }
  void on_closed(net::Stream*) override { delete this; }
  void on_timeout(net::Stream*) override { stream_->close(); }

  bool on_head() override { return false; }
  bool on_body(std::string_view) override { return true; }  // admin requests carry no payload
  void on_message_end() override {
    const auto& req = parser_.request();
    auto auth = req.header("authorization");
    answer(server_->handle(std::string(req.method), std::string(req.path),
                           auth ? std::string(*auth) : std::string()));
  }

 private:
  void answer(const std::string& bytes) {
    answered_ = true;
    stream_->stop_reading();
    stream_->write(bytes);
    if (stream_->out().drained()) stream_->close();
  }

  AdminServer* server_;
  net::Stream* stream_;
  http::Parser parser_;
  bool answered_ = false;
};

}  // namespace

// Walks all of `given` and compares it with `expected` cyclically, so the time depends only on
// the length of what the client sent, never on where the first difference is.
bool constant_time_equals(const std::string& expected, const std::string& given) {
  if (expected.empty()) return false;
  unsigned diff = expected.size() != given.size() ? 1u : 0u;
  for (size_t i = 0; i < given.size(); ++i) {
    diff |= static_cast<unsigned char>(expected[i % expected.size()] ^ given[i]);
  }
  return diff == 0;
}

AdminServer::AdminServer(uv_loop_t* loop, Hooks hooks) : loop_(loop), hooks_(std::move(hooks)) {}

AdminServer::~AdminServer() = default;

Status AdminServer::listen(const std::string& host, uint16_t port) {
  auto addr = net::resolve_numeric(host, port);
  if (!addr) return Status::fail("admin address: " + addr.message());
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  int rc = uv_tcp_bind(listener_, addr->get(), 0);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 64, on_connection_cb);
  if (rc != 0) {
    close();
    return Status::fail("admin listener " + host + ":" + std::to_string(port) + ": " + uv_strerror(rc));
  }
  return Status::ok();
}

Status AdminServer::listen_fd(int fd) {
  listener_ = new uv_tcp_t;
  uv_tcp_init(loop_, listener_);
  listener_->data = this;
  int rc = uv_tcp_open(listener_, fd);
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 64, on_connection_cb);
  if (rc != 0) {
    close();
    return Status::fail(std::string("admin listener (inherited): ") + uv_strerror(rc));
  }
  return Status::ok();
}

int AdminServer::fd() const {
  uv_os_fd_t fd = -1;
  if (listener_ == nullptr || uv_fileno(reinterpret_cast<const uv_handle_t*>(listener_), &fd) != 0) return -1;
  return fd;
}

void AdminServer::close() {
  if (listener_ == nullptr) return;
  uv_close(reinterpret_cast<uv_handle_t*>(listener_),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
  listener_ = nullptr;
}

void AdminServer::on_connection_cb(uv_stream_t* server, int status) {
  auto* self = static_cast<AdminServer*>(server->data);
  if (status != 0) return;
  auto* stream = new net::Stream(self->loop_, &self->buffers_);
  if (uv_accept(server, stream->uv()) != 0) {
    stream->close();
    return;
  }
  new AdminConnection(self, stream);  // frees itself when its stream closes
}

bool AdminServer::token_matches(const std::string& authorization) const {
  static const std::string kBearer = "Bearer ";
  if (authorization.compare(0, kBearer.size(), kBearer) != 0) return false;
  return constant_time_equals(token_, authorization.substr(kBearer.size()));
}

std::string AdminServer::handle(const std::string& method, const std::string& path,
                                const std::string& authorization) {
  if (method == "GET" || method == "HEAD") {
    if (path == "/metrics") {
      return response(200, "OK", "text/plain; version=0.0.4; charset=utf-8",
                      render_prometheus(hooks_.collect()));
    }
    if (path == "/status") return response(200, "OK", "application/json", render_json(hooks_.collect()));
    if (path == "/") return response(200, "OK", "text/html; charset=utf-8", render_html(hooks_.collect()));
    return text(404, "Not Found", "no such page");
  }
  static const std::string kPrefix = "/backends/";
  if (method != "POST" || path.compare(0, kPrefix.size(), kPrefix) != 0) {
    return text(405, "Method Not Allowed", "GET /metrics, /status, /; POST /backends/NAME/ACTION");
  }
  if (authorization.empty()) return text(401, "Unauthorized", "admin token required");
  if (token_.empty() || !token_matches(authorization)) return text(403, "Forbidden", "bad admin token");
  std::string rest = path.substr(kPrefix.size());
  size_t slash = rest.find('/');
  if (slash == std::string::npos) return text(404, "Not Found", "POST /backends/NAME/drain|enable|disable");
  std::string name = rest.substr(0, slash);
  std::string action = rest.substr(slash + 1);
  if (action != "drain" && action != "enable" && action != "disable") {
    return text(404, "Not Found", "actions: drain, enable, disable");
  }
  Status st = hooks_.backend_action(name, action);
  if (!st) return text(404, "Not Found", st.message());
  LOG_INFO("admin: backend %s: %s", name.c_str(), action.c_str());
  return text(200, "OK", "backend " + name + ": " + action);
}

}  // namespace limpet::admin
