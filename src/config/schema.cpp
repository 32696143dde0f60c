#include "limpet/config/schema.hpp"

#include <algorithm>

#include "limpet/config/loader.hpp"
#include "toml_reader.hpp"

namespace limpet::config {

namespace {

// Sets every key the loader reads, each sub-table present, so that every read happens. Values
// only need to be valid: TLS files are not opened by the loader.
constexpr const char* kEveryKey = R"(
include = []

[server]
workers = 2
pid_file = "/run/limpet.pid"
error_log = "stderr"
log_level = "info"
access_log = "stderr"
access_log_format = "json"
shutdown_timeout = "10s"
drain_timeout = "30s"
close_spread = "5s"
upgrade_drain_timeout = "1m"
shared_listeners = false
affinity_max_entries = 1000
resolver = "127.0.0.1:5353"
resolver_timeout = "5s"

[admin]
address = "127.0.0.1:9090"
token = "t"
allow_public = false

[session_store]
address = "127.0.0.1:6379"
username = "limpet"
password = "secret"
database = 0
key_prefix = "limpet:"
connect_timeout = "1s"
store_timeout = "100ms"
lookup_timeout = "100ms"
instance = "lb-1"

[session_store.tls]
verify = true
ca_file = "redis-ca.pem"
server_name = "redis.internal"

[[listener]]
name = "public"
address = "127.0.0.1:8443"
upstream = "app"
backlog = 511
max_connections = 100
header_timeout = "10s"
keepalive_timeout = "75s"
send_timeout = "60s"
body_timeout = "60s"
tunnel_idle_timeout = "10m"
max_header_size = "16k"
max_request_line = "8k"
max_body_size = "16m"
add_forwarded = true
ignore_client_abort = false
proxy_protocol = true
trusted_proxies = ["10.0.0.0/8"]
proxy_protocol_timeout = "5s"
ready_path = "/limpet-ready"
http2 = true
http2_max_streams = 128

[listener.tls]
cert = "default.pem"
key = "default.key"
min_version = "1.2"
ciphers = "HIGH"
ciphersuites = "TLS_AES_128_GCM_SHA256"
session_tickets = true

[[listener.tls.certificates]]
cert = "api.pem"
key = "api.key"
names = ["api.example.com"]

[[upstream]]
name = "app"
balance = "least_sessions"
engineio_paths = ["/socket.io/"]
session_ttl = "50s"
hash_keys = ["query:room", "ip"]
ring = "maglev"
ring_size = 101
balance_factor = 1.25
trusted_proxies = ["127.0.0.1"]
connect_timeout = "5s"
read_timeout = "60s"
handshake_timeout = "5s"
send_timeout = "60s"
max_message_size = "1m"
keepalive_idle_timeout = "4s"
max_tries = 3
keepalive_max_idle = 64
send_proxy_protocol = "v2"
resolve = "30s"

[upstream.sticky_cookie]
enabled = true
name = "limpet_backend"
path = "/"
max_age = "1h"
secure = true
http_only = true

[upstream.health]
type = "engineio"
path = "/socket.io/"
interval = "2s"
timeout = "1s"
rise = 2
fall = 3
status = "200-399"
max_fails = 3
fail_timeout = "10s"
slow_start = "30s"
failure_statuses = [502, 503, 504]

[upstream.tls]
verify = true
ca_file = "ca.pem"
server_name = "backend.internal"

[[upstream.backend]]
name = "b1"
address = "127.0.0.1:3001"
weight = 1
resolve = "10s"
)";

// "[[listener.tls.certificates]]" -> "listener.tls.certificates"; "the top level" -> "".
Result<std::string> table_path(const std::string& context) {
  if (context == "the top level") return std::string();
  const size_t first = context.find_first_not_of('[');
  const size_t last = context.find_last_not_of(']');
  if (first == 0 || first == std::string::npos || last + 1 == context.size()) {
    return Error{"known_keys: cannot tell the table path of context \"" + context + "\""};
  }
  return context.substr(first, last - first + 1);
}

}  // namespace

Result<std::vector<std::string>> known_keys() {
  detail::KeyRecorder recorder;
  const auto loaded = load_string(kEveryKey, "known_keys");
  if (!loaded) return Error{"known_keys: the built-in file does not load: " + loaded.message()};
  std::vector<std::string> keys;
  for (const auto& k : recorder.keys()) {
    const auto table = table_path(k.context);
    if (!table) return Error{table.message()};
    const std::string path = table->empty() ? k.key : *table + "." + k.key;
    if (!k.present) {
      return Error{"known_keys: the loader reads \"" + path + "\", which the built-in file (src/config/schema.cpp) "
                   "does not set: add it there"};
    }
    keys.push_back(path);
  }
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

}  // namespace limpet::config
