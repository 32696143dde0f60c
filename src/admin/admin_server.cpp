#include "limpet/admin/admin_server.hpp"

#include <algorithm>
#include <memory>
#include <optional>

#include "limpet/http/parser.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/net/socket.hpp"
#include "limpet/net/stream.hpp"
#include "limpet/util/log.hpp"
#include "limpet/util/strings.hpp"

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
  bool on_body(std::string_view data) override {  // a PUT's small JSON or form body
    if (body_.size() + data.size() > kMaxBody) {
      if (!answered_) answer(text(413, "Content Too Large", "an admin request body is at most 4096 bytes"));
      return false;
    }
    body_.append(data);
    return true;
  }
  void on_message_end() override {
    if (answered_) return;
    const auto& req = parser_.request();
    auto auth = req.header("authorization");
    answer(server_->handle(std::string(req.method), std::string(req.path),
                           auth ? std::string(*auth) : std::string(), body_));
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
  static constexpr size_t kMaxBody = 4096;
  http::Parser parser_;
  std::string body_;
  bool answered_ = false;
};

// "%2F" and friends, for backend names in a path (NAME/IP:PORT, "[::1]").
std::optional<std::string> percent_decoded(std::string_view s, bool plus_is_space) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+' && plus_is_space) {
      out += ' ';
    } else if (s[i] != '%') {
      out += s[i];
    } else {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    }
  }
  return out;
}

Status set_field(BackendChange& out, const std::string& key, const std::string& value) {
  if (key == "address") {
    out.address = value;
    return Status::ok();
  }
  if (key == "weight") {
    if (value.empty() || value.size() > 9) return Status::fail("weight: expected an integer from 1 to 1000, got " + value);
    int64_t n = 0;
    for (char c : value) {
      if (c < '0' || c > '9') return Status::fail("weight: expected an integer from 1 to 1000, got " + value);
      n = n * 10 + (c - '0');
    }
    out.weight = n;
    return Status::ok();
  }
  return Status::fail("unknown key \"" + key + "\": expected address, weight");
}

// The JSON this API takes: one flat object of strings and integers.
Status parse_json_body(std::string_view b, BackendChange& out) {
  size_t i = 0;
  auto ws = [&] {
    while (i < b.size() && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n')) ++i;
  };
  auto string = [&](std::string& s) {
    if (i >= b.size() || b[i] != '"') return false;
    for (++i; i < b.size() && b[i] != '"'; ++i) {
      if (b[i] == '\\' || static_cast<unsigned char>(b[i]) < 0x20) return false;  // nothing here needs escapes
      s += b[i];
    }
    return i++ < b.size();
  };
  const Status bad = Status::fail("expected a JSON object such as {\"address\": \"10.0.0.5:3000\", \"weight\": 2}");
  ws();
  if (i >= b.size() || b[i++] != '{') return bad;
  ws();
  if (i < b.size() && b[i] == '}') return ++i, ws(), i == b.size() ? Status::ok() : bad;
  while (true) {
    std::string key, value;
    ws();
    if (!string(key)) return bad;
    ws();
    if (i >= b.size() || b[i++] != ':') return bad;
    ws();
    if (i < b.size() && b[i] == '"') {
      if (!string(value)) return bad;
    } else {
      while (i < b.size() && ((b[i] >= '0' && b[i] <= '9') || b[i] == '-')) value += b[i++];
      if (value.empty()) return bad;
    }
    if (Status st = set_field(out, key, value); !st) return st;
    ws();
    if (i < b.size() && b[i] == ',') {
      ++i;
      continue;
    }
    if (i < b.size() && b[i] == '}') break;
    return bad;
  }
  ++i;
  ws();
  return i == b.size() ? Status::ok() : bad;
}

}  // namespace

Status parse_backend_body(std::string_view body, BackendChange& out) {
  const std::string_view b = trim(body);
  if (b.empty()) return Status::ok();
  if (b.front() == '{') return parse_json_body(b, out);
  size_t start = 0;
  while (start <= b.size()) {
    const size_t amp = std::min(b.find('&', start), b.size());
    const std::string_view pair = b.substr(start, amp - start);
    start = amp + 1;
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    auto key = percent_decoded(pair.substr(0, eq), true);
    auto value = percent_decoded(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1), true);
    if (!key || !value) return Status::fail("bad percent-encoding in the form body");
    if (Status st = set_field(out, *key, *value); !st) return st;
  }
  return Status::ok();
}

namespace {

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

// "UP/backends/NAME" (NAME may hold '/': NAME/IP:PORT), already authorised.
std::string AdminServer::handle_change(const std::string& method, std::string_view rest, std::string_view body) {
  static constexpr std::string_view kBackends = "/backends/";
  const size_t at = rest.find(kBackends);
  const auto upstream = percent_decoded(rest.substr(0, at == std::string_view::npos ? 0 : at), false);
  const auto backend =
      percent_decoded(at == std::string_view::npos ? std::string_view() : rest.substr(at + kBackends.size()), false);
  if (at == std::string_view::npos || !upstream || !backend || upstream->empty() || backend->empty()) {
    return text(404, "Not Found", "PUT or DELETE /upstreams/UPSTREAM/backends/NAME");
  }
  BackendChange c;
  c.kind = method == "PUT" ? BackendChange::Kind::kPut : BackendChange::Kind::kDelete;
  c.upstream = *upstream;
  c.backend = *backend;
  if (Status st = parse_backend_body(body, c); !st) return text(400, "Bad Request", st.message());
  if (c.kind == BackendChange::Kind::kDelete && (c.address || c.weight)) {
    return text(400, "Bad Request", "DELETE takes no body");
  }
  const Reply reply = hooks_.backend_change ? hooks_.backend_change(c) : Reply{404, "no upstreams here"};
  static const std::pair<int, const char*> kReasons[] = {
      {200, "OK"}, {400, "Bad Request"}, {404, "Not Found"}, {409, "Conflict"}};
  const char* reason = "Error";
  for (const auto& [status, r] : kReasons) {
    if (status == reply.status) reason = r;
  }
  return text(reply.status, reason, reply.message);
}

std::string AdminServer::handle(const std::string& method, const std::string& path,
                                const std::string& authorization, std::string_view body) {
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
  static const std::string kUpstreams = "/upstreams/";
  const bool change = (method == "PUT" || method == "DELETE") && path.compare(0, kUpstreams.size(), kUpstreams) == 0;
  if (!change && (method != "POST" || path.compare(0, kPrefix.size(), kPrefix) != 0)) {
    return text(405, "Method Not Allowed",
                "GET /metrics, /status, /; POST /backends/NAME/ACTION; PUT, DELETE /upstreams/UP/backends/NAME");
  }
  if (authorization.empty()) return text(401, "Unauthorized", "admin token required");
  if (token_.empty() || !token_matches(authorization)) return text(403, "Forbidden", "bad admin token");
  if (change) return handle_change(method, path.substr(kUpstreams.size()), body);
  // The action is after the last '/': a discovered backend's NAME holds one (NAME/IP:PORT), and
  // may also come percent-encoded (the status page sends encodeURIComponent(NAME)).
  std::string rest = path.substr(kPrefix.size());
  size_t slash = rest.rfind('/');
  if (slash == std::string::npos) return text(404, "Not Found", "POST /backends/NAME/drain|enable|disable");
  auto decoded = percent_decoded(std::string_view(rest).substr(0, slash), false);
  if (!decoded) return text(400, "Bad Request", "bad percent-encoding in the backend name");
  std::string name = std::move(*decoded);
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
