#include "limpet/config/loader.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <glob.h>
#include <map>
#include <memory>
#include <sstream>
#include <string_view>
#include <tuple>

#include <unistd.h>

#include "limpet/config/values.hpp"
#include "limpet/util/log.hpp"
#include "toml_reader.hpp"

namespace limpet::config {

namespace {

using detail::fail_at;
using detail::LoadError;
using detail::TableReader;

constexpr int64_t kMaxRingSize = 1 << 24;
constexpr uint32_t kRingPointsPerBackend = 100;
// Engine.IO's defaults: pingInterval 25 s + pingTimeout 20 s. A session is alive that long
// without a request, and a long-poll is held up to pingInterval.
constexpr Millis kEngineIoPingWindow{45000};
// conf.d files may include others, but a chain this deep is a loop or a mistake.
constexpr int kMaxIncludeDepth = 4;

// The value under `key` of a table whose reader required it and finished, so it is there.
const toml::value& at_key(const toml::value& table, const char* key) { return table.as_table().at(key); }

Result<std::string> parse_path(const std::string& text) {
  if (!text.starts_with('/')) return Error{"expected a path starting with \"/\", got " + quote_value(text)};
  return text;
}

Result<std::string> parse_non_empty(const std::string& text) {
  if (text.empty()) return Error{"expected a non-empty string"};
  return text;
}

// RFC 6265 cookie-name: an RFC 7230 token.
Result<std::string> parse_cookie_name(const std::string& text) {
  const bool token = !text.empty() && text.find_first_of("()<>@,;:\\\"/[]?={} \t") == std::string::npos &&
                     std::all_of(text.begin(), text.end(), [](char c) { return c > 32 && c < 127; });
  if (!token) return Error{"expected a cookie name (letters, digits, !#$%&'*+-.^_`|~), got " + quote_value(text)};
  return text;
}

// An SNI name as the TLS layer matches it: lower case DNS labels, optionally "*." and at least two
// more labels (a wildcard stands for exactly one label, as in certificates).
Result<std::string> parse_tls_name(const std::string& text, bool allow_wildcard) {
  std::string name = text;
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  const bool wildcard = name.starts_with("*.");
  const std::string_view labels = std::string_view(name).substr(wildcard ? 2 : 0);
  bool ok = !labels.empty() && labels.size() <= 253 && (allow_wildcard || !wildcard);
  size_t count = 0;
  for (size_t start = 0; ok && start <= labels.size(); ++count) {
    const size_t dot = std::min(labels.find('.', start), labels.size());
    const std::string_view label = labels.substr(start, dot - start);
    ok = !label.empty() && label.size() <= 63 && label.front() != '-' && label.back() != '-' &&
         std::all_of(label.begin(), label.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-'; });
    start = dot + 1;
  }
  if (ok && wildcard && count < 2) ok = false;  // "*.com" would cover a whole top-level domain
  if (!ok) {
    return Error{std::string(allow_wildcard ? "expected a host name such as \"api.example.com\" or \"*.example.com\""
                                            : "expected a host name such as \"backend.internal\"") +
                 ", got " + quote_value(text)};
  }
  return name;
}

// Why limpet could not write `path` (create it, or append to it), or "" when it could. Checked
// at -t, start and reload, so a typo is refused up front instead of logged at run time.
std::string unwritable(const std::string& path) {
  if (::access(path.c_str(), W_OK) == 0) return "";
  if (errno != ENOENT) return std::string("cannot write it: ") + std::strerror(errno);
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  if (::access(dir.c_str(), W_OK | X_OK) == 0) return "";
  return "cannot create it in " + dir + ": " + std::strerror(errno);
}

void check_writable(TableReader& r, std::string_view key, const std::string& path) {
  if (const std::string why = unwritable(path); !why.empty()) r.fail(key, quote_value(path) + ": " + why);
}

ServerConfig read_server(TableReader r, bool check_files) {
  ServerConfig s;
  if (const toml::value* v = r.find("workers")) {
    if (v->is_integer()) {
      r.read_int("workers", s.workers, 1, 256);
    } else if (!v->is_string() || v->as_string().str != "auto") {
      r.fail("workers", "expected \"auto\" or an integer from 1 to 256, got " + detail::describe(*v));
    }
  }
  r.read_parsed("pid_file", s.pid_file, parse_non_empty);
  r.read_parsed("error_log", s.error_log, parse_non_empty);
  r.read_choice("log_level", s.log_level, {"debug", "info", "warn", "error"});
  r.read_parsed("access_log", s.access_log, parse_non_empty);
  r.read_choice("access_log_format", s.access_log_format, {"text", "json"});
  r.read_duration("shutdown_timeout", s.shutdown_timeout, Millis(1));
  r.read_duration("drain_timeout", s.drain_timeout);
  r.read_duration("close_spread", s.close_spread);
  r.read_duration("upgrade_drain_timeout", s.upgrade_drain_timeout);
  r.read("shared_listeners", s.shared_listeners);
  r.read_int("affinity_max_entries", s.affinity_max_entries, 1, 1'000'000'000);
  r.read_parsed("resolver", s.resolver, [](const std::string& t) { return parse_resolver(t); });
  r.read_duration("resolver_timeout", s.resolver_timeout, Millis(1));
  r.finish();
  if (check_files && !s.pid_file.empty()) check_writable(r, "pid_file", s.pid_file);
  if (check_files && s.access_log != "stderr" && s.access_log != "off") check_writable(r, "access_log", s.access_log);
  return s;
}

AdminConfig read_admin(TableReader r) {
  AdminConfig a;
  a.enabled = true;
  a.address = *parse_address("127.0.0.1:9090", AddressUse::kListen);
  r.read_parsed("address", a.address, [](const std::string& t) { return parse_address(t, AddressUse::kListen); });
  r.read("token", a.token);
  r.read("allow_public", a.allow_public);
  r.finish();
  // The admin listener drains backends and shows the whole fleet: every interface only on purpose.
  if ((a.address.host == "0.0.0.0" || a.address.host == "::") && !a.allow_public) {
    r.fail("address", quote_value(a.address.text) + " listens on every interface: write a loopback or private "
                      "address, or set allow_public = true in [admin] (and a token)");
  }
  return a;
}

// The cert/key pair of a table ([listener.tls] itself or an entry of its `certificates`).
TlsCertificate read_certificate(TableReader& r) {
  TlsCertificate c;
  r.require("cert");
  r.read_parsed("cert", c.cert, parse_non_empty);
  r.require("key");
  r.read_parsed("key", c.key, parse_non_empty);
  return c;
}

// `names` of every SNI entry, each served by one certificate only.
void check_sni_names(const std::vector<const toml::value*>& tables, const std::vector<TlsCertificate>& certs) {
  std::map<std::string, const toml::value*> seen;
  for (size_t i = 0; i < tables.size(); ++i) {
    if (tables[i]->as_table().count("names") == 0) continue;
    const auto& items = at_key(*tables[i], "names").as_array();
    for (size_t j = 0; j < items.size(); ++j) {
      if (const auto [it, inserted] = seen.emplace(certs[i].names[j], &items[j]); !inserted) {
        fail_at(items[j], "names: " + quote_value(it->first) + " is already served by the certificate at " +
                              detail::position(*it->second));
      }
    }
  }
}

ListenerTls read_listener_tls(TableReader r) {
  ListenerTls t;
  t.enabled = true;
  t.where = detail::position(r.table());
  t.certificate = read_certificate(r);
  r.read_enum("min_version", t.min_version, {{"1.2", TlsVersion::kTls12}, {"1.3", TlsVersion::kTls13}});
  r.read_parsed("ciphers", t.ciphers, parse_non_empty);
  r.read_parsed("ciphersuites", t.ciphersuites, parse_non_empty);
  r.read("session_tickets", t.session_tickets);
  const auto tables = r.find_tables("certificates");
  for (const toml::value* c : tables) {
    TableReader cr(*c, "[[listener.tls.certificates]]");
    TlsCertificate& cert = t.certificates.emplace_back(read_certificate(cr));
    if (cr.read_list("names", cert.names, [](const std::string& n) { return parse_tls_name(n, true); }) &&
        cert.names.empty()) {
      cr.fail("names", "expected at least one name (leave names out to serve the certificate's own names)");
    }
    cr.finish();
  }
  r.finish();
  check_sni_names(tables, t.certificates);
  return t;
}

ListenerConfig read_listener(TableReader r, size_t index) {
  ListenerConfig l;
  l.name = "listener" + std::to_string(index + 1);
  r.read_parsed("name", l.name, parse_non_empty);
  r.require("address");
  r.read_parsed("address", l.address, [](const std::string& t) { return parse_address(t, AddressUse::kListen); });
  r.require("upstream");
  r.read("upstream", l.upstream);
  r.read_int("backlog", l.backlog, 1, 65535);
  r.read_int("max_connections", l.max_connections, 0, 10'000'000);
  r.read_duration("header_timeout", l.header_timeout, Millis(1));
  r.read_duration("keepalive_timeout", l.keepalive_timeout, Millis(1));
  r.read_duration("send_timeout", l.send_timeout, Millis(1));
  r.read_duration("body_timeout", l.body_timeout, Millis(1));
  r.read_duration("tunnel_idle_timeout", l.tunnel_idle_timeout, Millis(1));
  r.read_size("max_header_size", l.max_header_size);
  r.read_size("max_request_line", l.max_request_line);
  r.read_size("max_body_size", l.max_body_size);
  r.read("add_forwarded", l.add_forwarded);
  r.read("ignore_client_abort", l.ignore_client_abort);
  r.read("proxy_protocol", l.proxy_protocol);
  const bool has_trusted =
      r.read_list("trusted_proxies", l.trusted_proxies, [](const std::string& t) { return parse_cidr(t); });
  r.read_duration("proxy_protocol_timeout", l.proxy_protocol_timeout, Millis(1));
  r.read_parsed("ready_path", l.ready_path, parse_path);
  r.read("http2", l.http2);
  r.read_int("http2_max_streams", l.http2_max_streams, 1, 10000);
  // Without a list anyone could claim any client address.
  if (l.proxy_protocol && !has_trusted) {
    r.fail("proxy_protocol", "proxy_protocol = true needs trusted_proxies, the addresses allowed to send the "
                             "header, such as [\"10.0.0.0/8\", \"127.0.0.1\"]");
  }
  if (has_trusted && l.trusted_proxies.empty()) {
    r.fail("trusted_proxies", "expected at least one address or CIDR such as \"10.0.0.0/8\"");
  }
  if (const toml::value* t = r.find_table("tls")) l.tls = read_listener_tls(TableReader(*t, "[listener.tls]"));
  if (l.max_header_size == 0) r.fail("max_header_size", "expected a size greater than 0");
  if (l.max_request_line == 0) r.fail("max_request_line", "expected a size greater than 0");
  r.finish();
  return l;
}

// A backend's name: '/' is kept for the backends a name resolves to (NAME/IP:PORT).
Result<std::string> parse_backend_name(const std::string& text) {
  if (text.empty()) return Error{"expected a non-empty name"};
  if (text.find('/') != std::string::npos) {
    return Error{"'/' is reserved for the backends a host name resolves to (NAME/IP:PORT), got " + quote_value(text)};
  }
  return text;
}

// `resolve`: 0 (at start and reload only) or at least a second.
void read_resolve(TableReader& r, Millis& out) {
  if (r.read_duration("resolve", out) && out.count() != 0 && out < Millis(1000)) {
    r.fail("resolve", "expected 0 (at start and reload only) or at least \"1s\", got " + detail::describe(*r.find("resolve")));
  }
}

BackendConfig read_backend(TableReader r, Millis resolve) {
  BackendConfig b;
  b.resolve = resolve;
  r.require("name");
  r.read_parsed("name", b.name, parse_backend_name);
  r.require("address");
  r.read_parsed("address", b.address, [](const std::string& t) { return parse_address(t, AddressUse::kBackend); });
  r.read_int("weight", b.weight, 1, 1000);
  read_resolve(r, b.resolve);
  const toml::source_location loc = r.table().location();
  b.file = loc.file_name();
  b.line = static_cast<int>(loc.line());
  r.finish();
  return b;
}

StickyCookie read_sticky_cookie(TableReader r) {
  StickyCookie c;
  c.enabled = true;
  r.read("enabled", c.enabled);
  r.read_parsed("name", c.name, parse_cookie_name);
  r.read_parsed("path", c.path, parse_path);
  r.read_duration("max_age", c.max_age);
  r.read("secure", c.secure);
  r.read("http_only", c.http_only);
  r.finish();
  return c;
}

HealthCheck read_health(TableReader r, const std::vector<std::string>& engineio_paths) {
  HealthCheck h;
  r.read_enum("type", h.kind,
              {{"none", HealthCheck::Kind::kNone},
               {"http", HealthCheck::Kind::kHttp},
               {"engineio", HealthCheck::Kind::kEngineIo}});
  const bool has_path = r.read_parsed("path", h.path, parse_path);
  if (h.kind == HealthCheck::Kind::kEngineIo && !has_path) {
    if (engineio_paths.empty()) {
      fail_at(r.table(), r.context() + ": type \"engineio\" needs a path (engineio_paths is empty)");
    }
    h.path = engineio_paths.front();
  }
  r.read_duration("interval", h.interval, Millis(1));
  r.read_duration("timeout", h.timeout, Millis(1));
  r.read_int("rise", h.rise, 1, 100);
  r.read_int("fall", h.fall, 1, 100);
  r.read_int("max_fails", h.max_fails, 0, 1000);
  r.read_duration("fail_timeout", h.fail_timeout, Millis(1));
  r.read_duration("slow_start", h.slow_start);
  r.read_int_list("failure_statuses", h.failure_statuses, 100, 599);
  if (const toml::value* v = r.find("status"); v != nullptr && v->is_integer()) {
    r.read_int("status", h.status_min, 100, 599);
    h.status_max = h.status_min;
  } else {
    std::pair<int, int> range{h.status_min, h.status_max};
    r.read_parsed("status", range, parse_status_range);
    std::tie(h.status_min, h.status_max) = range;
  }
  r.finish();
  return h;
}

// Maglev needs a prime table comfortably larger than the backend count (design §5).
void check_ring_size(TableReader& r, const UpstreamConfig& u) {
  const bool explicit_size = r.find("ring_size") != nullptr;
  if (u.ring != RingKind::kMaglev && !explicit_size) return;
  const uint64_t needed = uint64_t{kRingPointsPerBackend} * u.backends.size();
  if (is_prime(u.ring_size) && u.ring_size >= needed) return;
  const std::string rule = "ring_size must be a prime >= " + std::to_string(kRingPointsPerBackend) +
                           " x number of backends (" +
                           std::to_string(u.backends.size()) + " backends: at least " + std::to_string(needed) +
                           "), such as " + std::to_string(next_prime(std::max<uint64_t>(needed, 2)));
  const std::string why = is_prime(u.ring_size) ? " is too small: " : " is not a prime: ";
  const std::string what = "ring_size " + std::to_string(u.ring_size) + why + rule;
  if (explicit_size) r.fail("ring_size", what);
  fail_at(r.table(), r.context() + " " + quote_value(u.name) + ": the default " + what);
}

// `tls = true`, or a table of settings (which turns TLS on too).
UpstreamTls read_upstream_tls(TableReader& upstream, const char* context = "[upstream.tls]") {
  UpstreamTls t;
  const toml::value* v = upstream.find("tls");
  if (v == nullptr) return t;
  t.where = detail::position(*v);
  if (v->is_boolean()) {
    t.enabled = v->as_boolean();
    return t;
  }
  if (!v->is_table()) {
    upstream.fail("tls", "expected true, false or a table such as { verify = true, ca_file = \"ca.pem\" }, got " +
                             detail::describe(*v));
  }
  TableReader r(*v, context);
  t.enabled = true;
  r.read("verify", t.verify);
  r.read_parsed("ca_file", t.ca_file, parse_non_empty);
  r.read_parsed("server_name", t.server_name, [](const std::string& n) { return parse_tls_name(n, false); });
  r.finish();
  return t;
}

// A session_ttl or read_timeout under the ping window loses live sessions (an idle session's
// entry expires; a held long-poll times out): it loads, with a warning, since backends may
// configure shorter pings.
void warn_short_of_ping_window(TableReader& r, const UpstreamConfig& u, std::vector<std::string>& warnings) {
  if (u.engineio_paths.empty()) return;
  const std::pair<const char*, Millis> timeouts[] = {{"session_ttl", u.session_ttl}, {"read_timeout", u.read_timeout}};
  for (const auto& [key, value] : timeouts) {
    if (value >= kEngineIoPingWindow) continue;
    const toml::value* v = r.find(key);
    if (v == nullptr) continue;  // the defaults are longer than the window (config.hpp)
    warnings.push_back(detail::position(*v) + ": " + key + ": " + detail::describe(*v) +
                       " is shorter than Engine.IO's ping window (pingInterval + pingTimeout, 45s by default) of "
                       "upstream " + quote_value(u.name) + " with engineio_paths: idle sessions and held long-polls "
                       "would be cut");
  }
}

UpstreamConfig read_upstream(TableReader r, std::vector<std::string>& warnings) {
  UpstreamConfig u;
  r.require("name");
  r.read_parsed("name", u.name, parse_non_empty);
  r.read_enum("balance", u.balance,
              {{"round_robin", Balance::kRoundRobin},
               {"least_conn", Balance::kLeastConn},
               {"least_sessions", Balance::kLeastSessions},
               {"two_choices", Balance::kTwoChoices}});
  r.read_list("engineio_paths", u.engineio_paths, parse_path);
  r.read_duration("session_ttl", u.session_ttl, Millis(1));
  r.read_list("hash_keys", u.hash_keys, [](const std::string& t) { return parse_hash_key(t); });
  r.read_enum("ring", u.ring, {{"maglev", RingKind::kMaglev}, {"rendezvous", RingKind::kRendezvous}});
  r.read_int("ring_size", u.ring_size, 1, kMaxRingSize);
  if (r.read("balance_factor", u.balance_factor) &&
      !(u.balance_factor == 0 || (std::isfinite(u.balance_factor) && u.balance_factor > 1.0))) {
    r.fail("balance_factor", "expected 0 (off) or a number greater than 1.0 such as 1.25, got " +
                                 toml::format(*r.find("balance_factor")));
  }
  r.read_list("trusted_proxies", u.trusted_proxies, [](const std::string& t) { return parse_cidr(t); });
  r.read_duration("connect_timeout", u.connect_timeout, Millis(1));
  r.read_duration("read_timeout", u.read_timeout, Millis(1));
  r.read_duration("handshake_timeout", u.handshake_timeout, Millis(1));
  r.read_duration("send_timeout", u.send_timeout, Millis(1));
  r.read_size("max_message_size", u.max_message_size);
  r.read_duration("keepalive_idle_timeout", u.keepalive_idle_timeout, Millis(1));
  r.read_enum("send_proxy_protocol", u.send_proxy_protocol,
              {{"off", SendProxyProtocol::kOff}, {"v1", SendProxyProtocol::kV1}, {"v2", SendProxyProtocol::kV2}});
  r.read_int("max_tries", u.max_tries, 1, 100);
  r.read_int("keepalive_max_idle", u.keepalive_max_idle, 0, 100'000);
  if (const toml::value* t = r.find_table("sticky_cookie")) {
    u.sticky_cookie = read_sticky_cookie(TableReader(*t, "[upstream.sticky_cookie]"));
  }
  if (const toml::value* t = r.find_table("health")) {
    u.health = read_health(TableReader(*t, "[upstream.health]"), u.engineio_paths);
  }
  u.tls = read_upstream_tls(r);

  read_resolve(r, u.resolve);
  const auto backends = r.find_tables("backend");
  for (const toml::value* t : backends) {
    u.backends.push_back(read_backend(TableReader(*t, "[[upstream.backend]]"), u.resolve));
  }
  r.finish();

  if (backends.empty()) {
    const toml::value* v = r.find("backend");
    fail_at(v != nullptr ? *v : r.table(), r.context() + " " + quote_value(u.name) +
                                               ": no backends: add at least one [[upstream.backend]]");
  }
  std::map<std::string, const toml::value*> names;
  for (size_t i = 0; i < backends.size(); ++i) {
    const toml::value& name = at_key(*backends[i], "name");
    if (const auto [it, inserted] = names.emplace(u.backends[i].name, &name); !inserted) {
      fail_at(name, "name: duplicate backend name " + quote_value(it->first) + " in upstream " + quote_value(u.name) +
                        " (first at " + detail::position(*it->second) + ")");
    }
  }
  check_ring_size(r, u);
  warn_short_of_ping_window(r, u, warnings);
  return u;
}

std::vector<UpstreamConfig> read_upstreams(TableReader& root, std::vector<std::string>& warnings) {
  std::vector<UpstreamConfig> upstreams;
  std::map<std::string, const toml::value*> names;
  for (const toml::value* t : root.find_tables("upstream")) {
    upstreams.push_back(read_upstream(TableReader(*t, "[[upstream]]"), warnings));
    const toml::value& name = at_key(*t, "name");
    if (const auto [it, inserted] = names.emplace(upstreams.back().name, &name); !inserted) {
      fail_at(name, "name: duplicate upstream name " + quote_value(it->first) + " (first at " +
                        detail::position(*it->second) + ")");
    }
  }
  return upstreams;
}

// Listener tables in file order, with what the cross-checks need to point at.
struct ListenerTables {
  std::vector<ListenerConfig> listeners;
  std::vector<const toml::value*> tables;
};

ListenerTables read_listeners(TableReader& root) {
  ListenerTables out;
  std::map<std::string, const toml::value*> names;
  std::map<std::pair<std::string, uint16_t>, const toml::value*> addresses;
  for (const toml::value* t : root.find_tables("listener")) {
    const ListenerConfig& l =
        out.listeners.emplace_back(read_listener(TableReader(*t, "[[listener]]"), out.listeners.size()));
    out.tables.push_back(t);
    // An unnamed listener's default name can clash too: point at its header then.
    const toml::value& name = t->as_table().count("name") != 0 ? at_key(*t, "name") : *t;
    if (const auto [it, inserted] = names.emplace(l.name, &name); !inserted) {
      fail_at(name, "name: duplicate listener name " + quote_value(l.name) + " (first at " +
                        detail::position(*it->second) + ")");
    }
    const toml::value& address = at_key(*t, "address");
    if (const auto [it, inserted] = addresses.emplace(std::pair(l.address.host, l.address.port), &address);
        !inserted) {
      fail_at(address, "address: " + quote_value(l.address.text) + " is already used by another listener (at " +
                           detail::position(*it->second) + ")");
    }
  }
  return out;
}

SessionStoreConfig read_session_store(TableReader r) {
  SessionStoreConfig s;
  s.enabled = true;
  r.require("address");
  r.read_parsed("address", s.address, [](const std::string& t) { return parse_address(t, AddressUse::kConnect); });
  r.read("username", s.username);
  r.read("password", s.password);
  r.read_int("database", s.database, 0, 15);
  r.read_parsed("key_prefix", s.key_prefix, parse_non_empty);
  r.read_duration("connect_timeout", s.connect_timeout, Millis(1));
  r.read_duration("store_timeout", s.store_timeout, Millis(1));
  r.read_duration("lookup_timeout", s.lookup_timeout, Millis(1));
  r.read_parsed("instance", s.instance, parse_non_empty);
  s.tls = read_upstream_tls(r, "[session_store.tls]");
  r.finish();
  if (!s.username.empty() && s.password.empty()) r.fail("username", "a username needs a password (Redis ACL AUTH)");
  return s;
}

// Table by table first, so an error inside a table is reported before what the file as a whole lacks.
Config read_config(const toml::value& root, const std::string& name, bool check_files) {
  Config config;
  config.file = name;
  TableReader r(root, "the top level");
  r.find("include");  // already merged in (read_document)
  if (const toml::value* t = r.find_table("server")) {
    config.server = read_server(TableReader(*t, "[server]"), check_files);
  }
  const toml::value* admin = r.find_table("admin");
  if (admin != nullptr) config.admin = read_admin(TableReader(*admin, "[admin]"));
  if (const toml::value* t = r.find_table("session_store")) {
    config.session_store = read_session_store(TableReader(*t, "[session_store]"));
  }
  ListenerTables listeners = read_listeners(r);
  config.listeners = std::move(listeners.listeners);
  config.upstreams = read_upstreams(r, config.warnings);
  r.finish();

  if (config.listeners.empty()) fail_at(root, "at least one [[listener]] is required");
  if (config.upstreams.empty()) fail_at(root, "at least one [[upstream]] is required");
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    const ListenerConfig& l = config.listeners[i];
    if (config.find_upstream(l.upstream) == nullptr) {
      fail_at(at_key(*listeners.tables[i], "upstream"), "upstream: no [[upstream]] named " + quote_value(l.upstream));
    }
    if (config.admin.enabled && l.address.host == config.admin.address.host &&
        l.address.port == config.admin.address.port) {
      fail_at(admin->as_table().count("address") != 0 ? at_key(*admin, "address") : *admin,
              "address: the admin address " + quote_value(config.admin.address.text) + " is also listener " +
                  quote_value(l.name) + "'s address");
    }
  }
  return config;
}

// A TOML document is UTF-8 (TOML 1.0). Checked before toml11 sees the text: toml11 3.7 reads
// past its buffer when it reports some invalid sequences (a literal string such as '\xff'), and
// a reload must never do that. The offset of the first byte of the first invalid sequence
// (overlong forms, surrogates and code points past U+10FFFF included), or npos.
size_t invalid_utf8_at(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t more = 0;
    uint32_t cp = 0;
    uint32_t min = 0;
    if ((c & 0xE0) == 0xC0) {
      more = 1, cp = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      more = 2, cp = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      more = 3, cp = c & 0x07u, min = 0x10000;
    } else {
      return i;
    }
    if (s.size() - i <= more) return i;
    for (size_t k = 1; k <= more; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (cc & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
    i += more + 1;
  }
  return std::string_view::npos;
}

std::string utf8_error(std::string_view text, size_t at, const std::string& name) {
  const std::string_view before = text.substr(0, at);
  const size_t line = 1 + static_cast<size_t>(std::count(before.begin(), before.end(), '\n'));
  const size_t nl = before.rfind('\n');
  const size_t column = at - (nl == std::string_view::npos ? 0 : nl + 1) + 1;
  return name + ":" + std::to_string(line) + ":" + std::to_string(column) +
         ": invalid UTF-8 (a TOML file must be UTF-8 text)";
}

Result<std::string> read_text(const std::string& path) {
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) return Error{path + ": cannot open: " + std::strerror(errno)};
  std::string text;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, file.get())) > 0;) text.append(buf, n);
  if (std::ferror(file.get()) != 0) return Error{path + ": cannot read: " + std::strerror(errno)};
  return text;
}

// ${NAME} in every string value, in place: positions stay those of the file.
void expand_env_in(toml::value& v) {
  if (v.is_string()) {
    auto expanded = expand_env(v.as_string().str);
    if (!expanded) fail_at(v, expanded.message());
    v.as_string().str = std::move(*expanded);
  } else if (v.is_array()) {
    for (auto& item : v.as_array()) expand_env_in(item);
  } else if (v.is_table()) {
    for (auto& [key, item] : v.as_table()) expand_env_in(item);
  }
}

bool is_array_of_tables(const toml::value& v) {
  return v.is_array() && !v.as_array().empty() &&
         std::all_of(v.as_array().begin(), v.as_array().end(), [](const toml::value& t) { return t.is_table(); });
}

// An included file's tables as if written in the including file: arrays of tables appended,
// tables merged key by key, any other key set twice refused.
void merge_into(toml::value& into, const toml::value& from, const std::string& path) {
  for (const auto& [key, value] : from.as_table()) {
    if (path.empty() && key == "include") continue;
    const std::string dotted = path.empty() ? key : path + "." + key;
    auto& table = into.as_table();
    const auto it = table.find(key);
    if (it == table.end()) {
      table.emplace(key, value);
    } else if (is_array_of_tables(it->second) && is_array_of_tables(value)) {
      auto& items = it->second.as_array();
      items.insert(items.end(), value.as_array().begin(), value.as_array().end());
    } else if (it->second.is_table() && value.is_table()) {
      merge_into(it->second, value, dotted);
    } else {
      fail_at(value, quote_value(dotted) + " is already set at " + detail::position(it->second));
    }
  }
}

// `pattern` relative to the directory of the including file, sorted (glob's order). A pattern
// without wildcards names one file, which must exist; a glob may match none (an empty conf.d).
std::vector<std::string> include_paths(const toml::value& pattern, const std::string& including) {
  if (!pattern.is_string()) fail_at(pattern, "include: expected a file name or pattern, got " + detail::describe(pattern));
  std::string text = pattern.as_string().str;
  const size_t slash = including.rfind('/');
  if (!text.starts_with('/') && slash != std::string::npos) text = including.substr(0, slash + 1) + text;
  glob_t found{};
  const int rc = ::glob(text.c_str(), 0, nullptr, &found);
  std::vector<std::string> paths(found.gl_pathv, found.gl_pathv + found.gl_pathc);
  ::globfree(&found);
  if (rc == GLOB_NOMATCH && text.find_first_of("*?[") == std::string::npos) {
    fail_at(pattern, "include: " + quote_value(text) + ": no such file");
  }
  if (rc != 0 && rc != GLOB_NOMATCH) fail_at(pattern, "include: cannot read " + quote_value(text));
  return paths;
}

// One file, its ${ENV} expanded and its includes merged in.
toml::value read_document(const std::string& text, const std::string& name, int depth) {
  if (const size_t bad = invalid_utf8_at(text); bad != std::string_view::npos) {
    throw LoadError{utf8_error(text, bad, name)};
  }
  toml::value root;
  try {
    std::istringstream in(text);
    root = toml::parse(in, name);
  } catch (const toml::syntax_error& e) {
    throw LoadError{detail::format_syntax_error(e, name)};
  }
  expand_env_in(root);
  const auto include = root.as_table().find("include");
  if (include == root.as_table().end()) return root;
  if (!include->second.is_array()) {
    fail_at(include->second, "include: expected an array of file names or patterns such as [\"conf.d/*.toml\"]");
  }
  if (depth >= kMaxIncludeDepth) {
    fail_at(include->second, "include: nested more than " + std::to_string(kMaxIncludeDepth) +
                                 " levels deep (does a file include itself?)");
  }
  for (const auto& pattern : include->second.as_array()) {
    for (const std::string& path : include_paths(pattern, name)) {
      auto included = read_text(path);
      if (!included) fail_at(pattern, "include: " + included.message());
      merge_into(root, read_document(*included, path, depth + 1), "");
    }
  }
  return root;
}

Result<Config> load(const std::string& text, const std::string& name, bool check_files) {
  try {
    Config config = read_config(read_document(text, name, 0), name, check_files);
    for (const std::string& warning : config.warnings) LOG_WARN("%s", warning.c_str());
    return config;
  } catch (const LoadError& e) {
    return Result<Config>::fail(e.message);
  } catch (const std::exception& e) {
    return Result<Config>::fail(name + ": " + e.what());
  }
}

}  // namespace

Result<Config> load_string(const std::string& text, const std::string& name) { return load(text, name, false); }

Result<Config> load_file(const std::string& path) {
  auto text = read_text(path);
  if (!text) return Result<Config>::fail(text.message());
  return load(*text, path, true);
}

}  // namespace limpet::config
