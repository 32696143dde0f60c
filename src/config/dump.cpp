#include "limpet/config/dump.hpp"

#include <cstdio>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "limpet/config/values.hpp"

namespace limpet::config {

namespace {

// Appends "key = value" lines; each value written as the loader parses it.
class Writer {
 public:
  void table(std::string_view header) { out_ += "\n" + std::string(header) + "\n"; }

  void raw(std::string_view key, const std::string& value) { out_ += std::string(key) + " = " + value + "\n"; }
  void str(std::string_view key, const std::string& value) { raw(key, quoted(value)); }
  // Keys whose reader refuses "" (parse_non_empty): left out when empty, which is their default.
  void non_empty(std::string_view key, const std::string& value) {
    if (!value.empty()) str(key, value);
  }
  void boolean(std::string_view key, bool value) { raw(key, value ? "true" : "false"); }
  void integer(std::string_view key, uint64_t value) { raw(key, std::to_string(value)); }
  void duration(std::string_view key, Millis value) { raw(key, quoted(duration_text(value))); }
  void strings(std::string_view key, const std::vector<std::string>& values) {
    std::string list;
    for (const auto& v : values) list += (list.empty() ? "" : ", ") + quoted(v);
    raw(key, "[" + list + "]");
  }
  void number(std::string_view key, double value) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", value);
    std::string text = buf;
    if (text.find_first_of(".e") == std::string::npos) text += ".0";
    raw(key, text);
  }

  const std::string& text() const { return out_; }

  // Quoted as TOML, with "${" escaped so the loader's ${ENV} expansion gives the value back.
  static std::string quoted(const std::string& value) { return quote_value(escape_env(value)); }

 private:
  // The largest unit that divides the value: "30s", not "30000ms".
  static std::string duration_text(Millis value) {
    constexpr std::pair<int64_t, const char*> kUnits[] = {
        {86'400'000, "d"}, {3'600'000, "h"}, {60'000, "m"}, {1000, "s"}};
    const int64_t ms = value.count();
    for (const auto& [factor, unit] : kUnits) {
      if (ms != 0 && ms % factor == 0) return std::to_string(ms / factor) + unit;
    }
    return std::to_string(ms) + "ms";
  }

  std::string out_;
};

template <typename E>
const char* name_of(E value, std::initializer_list<std::pair<E, const char*>> names) {
  for (const auto& [v, name] : names) {
    if (v == value) return name;
  }
  return "";
}

void write_server(Writer& w, const ServerConfig& s) {
  w.table("[server]");
  if (s.workers == 0) {
    w.str("workers", "auto");
  } else {
    w.integer("workers", s.workers);
  }
  w.non_empty("pid_file", s.pid_file);
  w.non_empty("error_log", s.error_log);
  w.str("log_level", s.log_level);
  w.non_empty("access_log", s.access_log);
  w.str("access_log_format", s.access_log_format);
  w.duration("shutdown_timeout", s.shutdown_timeout);
  w.duration("drain_timeout", s.drain_timeout);
  w.duration("close_spread", s.close_spread);
  w.duration("upgrade_drain_timeout", s.upgrade_drain_timeout);
  w.boolean("shared_listeners", s.shared_listeners);
  w.integer("affinity_max_entries", s.affinity_max_entries);
  std::string servers;
  for (const auto& a : s.resolver) servers += (servers.empty() ? "" : ", ") + a.text;
  if (!servers.empty()) w.str("resolver", servers);
  w.duration("resolver_timeout", s.resolver_timeout);
}

void write_admin(Writer& w, const AdminConfig& a) {
  if (!a.enabled) return;
  w.table("[admin]");
  w.str("address", a.address.text);
  w.str("token", a.token);
  w.boolean("allow_public", a.allow_public);
}

std::string tls_inline(const UpstreamTls& t) {
  std::string text = "{ verify = " + std::string(t.verify ? "true" : "false");
  if (!t.ca_file.empty()) text += ", ca_file = " + Writer::quoted(t.ca_file);
  if (!t.server_name.empty()) text += ", server_name = " + Writer::quoted(t.server_name);
  return text + " }";
}

void write_session_store(Writer& w, const SessionStoreConfig& s) {
  if (!s.enabled) return;
  w.table("[session_store]");
  w.str("address", s.address.text);
  w.str("username", s.username);
  w.str("password", s.password);
  w.integer("database", s.database);
  w.non_empty("key_prefix", s.key_prefix);
  w.duration("connect_timeout", s.connect_timeout);
  w.duration("store_timeout", s.store_timeout);
  w.duration("lookup_timeout", s.lookup_timeout);
  w.non_empty("instance", s.instance);
  if (s.tls.enabled) w.raw("tls", tls_inline(s.tls));
}

void write_certificate(Writer& w, const TlsCertificate& c) {
  w.str("cert", c.cert);
  w.str("key", c.key);
  if (!c.names.empty()) w.strings("names", c.names);
}

void write_listener_tls(Writer& w, const ListenerTls& t) {
  if (!t.enabled) return;
  w.table("[listener.tls]");
  write_certificate(w, t.certificate);
  w.str("min_version", name_of(t.min_version, {{TlsVersion::kTls12, "1.2"}, {TlsVersion::kTls13, "1.3"}}));
  w.non_empty("ciphers", t.ciphers);
  w.non_empty("ciphersuites", t.ciphersuites);
  w.boolean("session_tickets", t.session_tickets);
  for (const auto& c : t.certificates) {
    w.table("[[listener.tls.certificates]]");
    write_certificate(w, c);
  }
}

void write_listener(Writer& w, const ListenerConfig& l) {
  w.table("[[listener]]");
  w.str("name", l.name);
  w.str("address", l.address.text);
  w.str("upstream", l.upstream);
  w.integer("backlog", l.backlog);
  w.integer("max_connections", l.max_connections);
  w.duration("header_timeout", l.header_timeout);
  w.duration("keepalive_timeout", l.keepalive_timeout);
  w.duration("send_timeout", l.send_timeout);
  w.duration("body_timeout", l.body_timeout);
  w.duration("tunnel_idle_timeout", l.tunnel_idle_timeout);
  w.integer("max_header_size", l.max_header_size);
  w.integer("max_request_line", l.max_request_line);
  w.integer("max_body_size", l.max_body_size);
  w.boolean("add_forwarded", l.add_forwarded);
  w.boolean("ignore_client_abort", l.ignore_client_abort);
  w.boolean("proxy_protocol", l.proxy_protocol);
  if (!l.trusted_proxies.empty()) w.strings("trusted_proxies", l.trusted_proxies);
  w.duration("proxy_protocol_timeout", l.proxy_protocol_timeout);
  w.non_empty("ready_path", l.ready_path);
  w.boolean("http2", l.http2);
  w.integer("http2_max_streams", l.http2_max_streams);
  write_listener_tls(w, l.tls);
}

void write_health(Writer& w, const HealthCheck& h) {
  w.table("[upstream.health]");
  w.str("type", name_of(h.kind, {{HealthCheck::Kind::kNone, "none"},
                                 {HealthCheck::Kind::kHttp, "http"},
                                 {HealthCheck::Kind::kEngineIo, "engineio"}}));
  w.str("path", h.path);
  w.duration("interval", h.interval);
  w.duration("timeout", h.timeout);
  w.integer("rise", static_cast<uint64_t>(h.rise));
  w.integer("fall", static_cast<uint64_t>(h.fall));
  w.str("status", std::to_string(h.status_min) + "-" + std::to_string(h.status_max));
  w.integer("max_fails", h.max_fails);
  w.duration("fail_timeout", h.fail_timeout);
  w.duration("slow_start", h.slow_start);
  std::string statuses;
  for (int s : h.failure_statuses) statuses += (statuses.empty() ? "" : ", ") + std::to_string(s);
  w.raw("failure_statuses", "[" + statuses + "]");
}

void write_sticky_cookie(Writer& w, const StickyCookie& c) {
  w.table("[upstream.sticky_cookie]");
  w.boolean("enabled", c.enabled);
  w.str("name", c.name);
  w.str("path", c.path);
  w.duration("max_age", c.max_age);
  w.boolean("secure", c.secure);
  w.boolean("http_only", c.http_only);
}

void write_upstream(Writer& w, const UpstreamConfig& u) {
  w.table("[[upstream]]");
  w.str("name", u.name);
  w.str("balance", name_of(u.balance, {{Balance::kRoundRobin, "round_robin"},
                                       {Balance::kLeastConn, "least_conn"},
                                       {Balance::kLeastSessions, "least_sessions"},
                                       {Balance::kTwoChoices, "two_choices"}}));
  w.strings("engineio_paths", u.engineio_paths);
  w.duration("session_ttl", u.session_ttl);
  std::vector<std::string> hash_keys;
  for (const auto& k : u.hash_keys) hash_keys.push_back(k.text);
  w.strings("hash_keys", hash_keys);
  w.str("ring", name_of(u.ring, {{RingKind::kMaglev, "maglev"}, {RingKind::kRendezvous, "rendezvous"}}));
  w.integer("ring_size", u.ring_size);
  w.number("balance_factor", u.balance_factor);
  w.strings("trusted_proxies", u.trusted_proxies);
  w.duration("connect_timeout", u.connect_timeout);
  w.duration("read_timeout", u.read_timeout);
  w.duration("handshake_timeout", u.handshake_timeout);
  w.duration("send_timeout", u.send_timeout);
  w.integer("max_message_size", u.max_message_size);
  w.duration("keepalive_idle_timeout", u.keepalive_idle_timeout);
  w.str("send_proxy_protocol", name_of(u.send_proxy_protocol, {{SendProxyProtocol::kOff, "off"},
                                                               {SendProxyProtocol::kV1, "v1"},
                                                               {SendProxyProtocol::kV2, "v2"}}));
  w.integer("max_tries", u.max_tries);
  w.integer("keepalive_max_idle", u.keepalive_max_idle);
  w.raw("tls", u.tls.enabled ? tls_inline(u.tls) : "false");
  w.duration("resolve", u.resolve);
  write_sticky_cookie(w, u.sticky_cookie);
  write_health(w, u.health);
  for (const auto& b : u.backends) {
    w.table("[[upstream.backend]]");
    w.str("name", b.name);
    w.str("address", b.address.text);
    w.integer("weight", b.weight);
    w.duration("resolve", b.resolve);
  }
}

}  // namespace

std::string to_toml(const Config& config) {
  Writer w;
  write_server(w, config.server);
  write_admin(w, config.admin);
  write_session_store(w, config.session_store);
  for (const auto& l : config.listeners) write_listener(w, l);
  for (const auto& u : config.upstreams) write_upstream(w, u);
  return "# limpet -T: the effective configuration of " + config.file + ", defaults included\n" + w.text();
}

}  // namespace limpet::config
