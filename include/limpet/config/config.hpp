// Configuration as plain data: what limpet.toml says, validated and with defaults applied.
// Built by config/loader on the main thread; immutable once published in a Snapshot, so any
// thread may read it through a shared_ptr<const Config>.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace limpet::config {

using Millis = std::chrono::milliseconds;

// "host:port", "[v6]:port" or "*:port"; resolved at load time to a numeric host. A backend's
// host may also be a DNS name (`by_name`), resolved at run time (runtime/discovery).
struct Address {
  std::string host;  // numeric IPv4/IPv6 literal ("0.0.0.0" for "*"); a lower-case name when by_name
  uint16_t port = 0;
  std::string text;  // as written, for messages and logs
  bool by_name = false;

  bool operator==(const Address&) const = default;
};

enum class Balance {
  kRoundRobin,     // "round_robin"
  kLeastConn,      // "least_conn": fewest in-flight requests + open tunnels
  kLeastSessions,  // "least_sessions": fewest live sessions (affinity entries + tunnels), weighted
  kTwoChoices,     // "two_choices": power of two random choices on live sessions
};

enum class RingKind {
  kMaglev,      // "maglev"
  kRendezvous,  // "rendezvous"
};

// One entry of upstream.hash_keys: where the consistent-hash key comes from.
struct HashKeySource {
  enum class Kind { kQuery, kHeader, kCookie, kIp };
  Kind kind = Kind::kIp;
  std::string name;  // parameter/header/cookie name; empty for kIp
  std::string text;  // as written ("query:room"), for logs
};

struct StickyCookie {
  bool enabled = false;
  std::string name = "limpet_backend";
  std::string path = "/";
  Millis max_age{0};  // 0 = session cookie
  bool secure = false;
  bool http_only = true;
};

struct HealthCheck {
  enum class Kind { kNone, kHttp, kEngineIo };
  Kind kind = Kind::kNone;
  std::string path = "/";  // HTTP path, or the Engine.IO path for kEngineIo
  Millis interval{2000};
  Millis timeout{1000};
  int rise = 2;
  int fall = 3;
  int status_min = 200;
  int status_max = 399;
  // Passive: connect failures and read timeouts seen by the proxy.
  uint32_t max_fails = 3;       // within fail_timeout mark the backend down; 0 = never
  Millis fail_timeout{10000};   // the window, and without active checks the time before a retry
  Millis slow_start{0};         // a backend back up ramps its share of new sessions over this
  // Statuses that, answered to a new session (an Engine.IO handshake, a WebSocket upgrade without
  // a sid), count as a passive failure: the new session is tried on another backend, and this one
  // is avoided by placement for fail_timeout or until it answers a new session well.
  std::vector<int> failure_statuses{502, 503, 504};

  bool operator==(const HealthCheck&) const = default;
};

// TLS (tls/). Certificates and keys are PEM files; a certificate file may carry the chain after
// the leaf. Files are read and checked when a snapshot is built (startup and every reload), not
// by the loader, so a renewed certificate is picked up by SIGHUP.
enum class TlsVersion {
  kTls12,  // "1.2"
  kTls13,  // "1.3"
};

struct TlsCertificate {
  std::string cert;
  std::string key;
  // SNI names served with this certificate, lower case: "api.example.com" or "*.example.com" (one
  // label). Empty: the DNS names of the certificate's subjectAltName.
  std::vector<std::string> names;
};

struct ListenerTls {
  bool enabled = false;
  TlsCertificate certificate;  // the default: no SNI, or a name no entry of `certificates` serves
  std::vector<TlsCertificate> certificates;  // chosen by SNI
  TlsVersion min_version = TlsVersion::kTls12;
  std::string ciphers;       // TLS 1.2 cipher list (OpenSSL syntax); empty = limpet's modern default
  std::string ciphersuites;  // TLS 1.3 suites; empty = limpet's default
  bool session_tickets = true;  // false: a server-side session cache instead
  std::string where;  // "FILE:LINE:COL" of the tls table, for errors found by the snapshot build
};

struct UpstreamTls {
  bool enabled = false;
  bool verify = true;       // false only when written out (and logged as a warning)
  std::string ca_file;      // PEM bundle; empty = the system store
  std::string server_name;  // SNI and the name verified; empty = each backend's host
  std::string where;
};

struct BackendConfig {
  std::string name;
  Address address;
  uint32_t weight = 1;  // 1..1000
  std::string file;  // source position, for reload messages
  int line = 0;
  // A name in `address` is resolved again this often (0: at start and reload only). Each address
  // it resolves to becomes a backend named NAME/IP:PORT (config/overlay.hpp).
  Millis resolve{30000};
  // Set on the backends of the effective configuration that came from a name: the configured
  // backend's name. Empty for a backend as the file (or the admin API) wrote it.
  std::string from{};
};

// PROXY protocol header sent first on every new connection to the backends (upstream
// send_proxy_protocol). The values are the protocol's version numbers (net::ProxyVersion).
enum class SendProxyProtocol : uint8_t {
  kOff = 0,  // "off"
  kV1 = 1,   // "v1": the text form
  kV2 = 2,   // "v2": the binary form
};

struct UpstreamConfig {
  std::string name;
  Balance balance = Balance::kLeastSessions;
  std::vector<BackendConfig> backends;
  Millis resolve{30000};  // the default of its backends' `resolve`

  // Stickiness (design §5), applied in this order before `balance`.
  std::vector<std::string> engineio_paths{"/socket.io/"};  // empty = no sid affinity
  Millis session_ttl{50000};  // > pingInterval (25 s) + pingTimeout (20 s)
  StickyCookie sticky_cookie;
  std::vector<HashKeySource> hash_keys;  // first present wins; empty = no hashing
  RingKind ring = RingKind::kMaglev;
  uint32_t ring_size = 65537;  // Maglev table size (prime)
  double balance_factor = 0;   // 0 = unbounded; else e.g. 1.25
  std::vector<std::string> trusted_proxies;  // CIDRs whose X-Forwarded-For is believed for `ip`

  // Upstream connections.
  Millis connect_timeout{5000};
  Millis read_timeout{60000};  // per read while waiting for the response; > Engine.IO 45 s
  // A new session's first answer (Engine.IO handshake, WebSocket 101) must come within this: it
  // is quick on a healthy node, so a silent one is hung (a failure, tried elsewhere).
  Millis handshake_timeout{5000};
  Millis send_timeout{60000};
  size_t max_message_size = 0;  // WebSocket message (all its fragments); 0 = unlimited
  uint32_t max_tries = 3;  // connect attempts over distinct backends (never for sid requests once sent)
  uint32_t keepalive_max_idle = 64;  // idle pooled connections per backend per worker
  // Below Node's 5 s keep-alive timeout, so the pool closes before the backend does; a backend's
  // own `Keep-Alive: timeout=N` shortens it further.
  Millis keepalive_idle_timeout{4000};
  // On: such connections carry one client's address, so they are never pooled (see the man page).
  SendProxyProtocol send_proxy_protocol = SendProxyProtocol::kOff;

  HealthCheck health;
  UpstreamTls tls;
};

struct ListenerConfig {
  std::string name;
  Address address;
  std::string upstream;  // name of an UpstreamConfig
  uint32_t backlog = 511;
  uint32_t max_connections = 0;  // per worker; 0: bounded by the fd budget (net/fd_budget.hpp) only
  Millis header_timeout{10000};      // whole request head must arrive within this (408)
  Millis keepalive_timeout{75000};   // idle client connection between requests
  Millis send_timeout{60000};        // client not reading our response
  Millis body_timeout{60000};        // client sending none of its request body (408)
  Millis tunnel_idle_timeout{600000};
  size_t max_header_size = 16 * 1024;   // whole head (431)
  size_t max_request_line = 8 * 1024;   // request line (414)
  size_t max_body_size = 16 * 1024 * 1024;  // 413; 0 = unlimited
  bool add_forwarded = false;           // RFC 7239 Forwarded header besides X-Forwarded-*
  // false (nginx's default): a client EOF while its request is proxied aborts it (499). true: a
  // half-closed client still gets its answers (a reset always aborts).
  bool ignore_client_abort = false;
  // PROXY protocol v1/v2 header expected first on every connection, only from trusted_proxies
  // (CIDRs, normalised "10.0.0.0/8"; required when on), within proxy_protocol_timeout.
  bool proxy_protocol = false;
  std::vector<std::string> trusted_proxies;
  Millis proxy_protocol_timeout{5000};
  // Answered by limpet itself, never proxied: 200 while serving, 503 once a shutdown or a binary
  // upgrade starts, so whatever balances in front stops sending first. Empty = off.
  std::string ready_path;
  // HTTP/2 to clients: offered in ALPN on a TLS listener; on a cleartext one, a connection that
  // opens with the HTTP/2 preface (prior knowledge, h2c) is served as HTTP/2. Backends stay HTTP/1.1.
  bool http2 = false;
  uint32_t http2_max_streams = 128;  // SETTINGS_MAX_CONCURRENT_STREAMS per connection
  ListenerTls tls;
};

struct AdminConfig {
  bool enabled = false;
  Address address;  // default 127.0.0.1:9090 when [admin] is present
  std::string token;  // empty = write operations refused
  bool allow_public = false;  // a wildcard address (0.0.0.0, ::) only when written out
};

// [session_store]: the Redis that several limpet instances share their learned sessions and
// their live session counts through (design §11). Absent: every instance routes on its own.
struct SessionStoreConfig {
  bool enabled = false;
  Address address;           // host:port of the Redis server
  std::string username;      // ACL user (Redis 6+); empty = AUTH with the password only
  std::string password;      // empty = no AUTH
  uint32_t database = 0;     // SELECT
  std::string key_prefix = "limpet:";
  Millis connect_timeout{1000};
  Millis store_timeout{100};   // a handshake response waits at most this for the store's ack
  Millis lookup_timeout{100};  // a request whose sid is unknown here waits at most this
  std::string instance;        // this instance's name in the shared counts; empty = host:pid
  UpstreamTls tls;             // verify, ca_file, server_name as for an upstream
};

struct ServerConfig {
  uint32_t workers = 0;  // 0 = "auto" (number of cores)
  std::string pid_file;  // empty = none
  std::string error_log = "stderr";
  std::string log_level = "info";  // debug | info | warn | error
  std::string access_log = "stderr";  // path, "stderr" or "off"
  std::string access_log_format = "text";  // text | json
  Millis shutdown_timeout{10000};
  Millis drain_timeout{30000};
  Millis close_spread{5000};
  // Binary upgrade: the old process spreads its tunnel closes over this window (0 = close_spread).
  Millis upgrade_drain_timeout{0};
  // Let a second limpet bind an address a live process already listens on (SO_REUSEPORT).
  bool shared_listeners = false;
  size_t affinity_max_entries = 1000000;
  // DNS servers for backends given by name ("127.0.0.1:5353"); empty = those of /etc/resolv.conf.
  std::vector<Address> resolver;
  Millis resolver_timeout{5000};  // one resolution, retries included
};

struct Config {
  std::string file;  // path the config was loaded from
  ServerConfig server;
  std::vector<ListenerConfig> listeners;
  std::vector<UpstreamConfig> upstreams;
  AdminConfig admin;
  SessionStoreConfig session_store;
  // "FILE:LINE:COL: ..." for settings that load but are likely wrong (logged by the loader).
  std::vector<std::string> warnings;

  const UpstreamConfig* find_upstream(const std::string& name) const {
    for (const auto& u : upstreams) {
      if (u.name == name) return &u;
    }
    return nullptr;
  }
};

}  // namespace limpet::config
