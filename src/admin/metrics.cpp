#include "limpet/admin/metrics.hpp"

#include <cinttypes>
#include <cstdio>
#include <string_view>

#include "limpet/util/json.hpp"

namespace limpet::admin {
namespace {

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

// A label value as the text exposition format (0.0.4) reads it: only backslash, double quote and
// line feed are escaped; every other byte, control characters and UTF-8 included, goes as it is.
// The JSON escaper would write \u00XX for control bytes, which Prometheus rejects.
std::string prometheus_label_value(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

class PromWriter {
 public:
  void family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void sample(const std::string& name, const std::string& labels, double value) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.17g", value);
    out_ += name;
    if (!labels.empty()) out_ += "{" + labels + "}";
    out_ += ' ';
    out_ += buf;
    out_ += '\n';
  }
  // A family of one unlabelled counter.
  void counter(const char* name, const char* help, uint64_t value) {
    family(name, "counter", help);
    sample(name, "", static_cast<double>(value));
  }
  template <typename Values>
  void histogram(const char* name, const char* help, const Values& v) {
    family(name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < v.counts.size(); ++i) {
      cumulative += v.counts[i];
      char le[32];
      if (i < Values::kBounds.size()) {
        std::snprintf(le, sizeof le, "%g", Values::kBounds[i]);
      } else {
        std::snprintf(le, sizeof le, "+Inf");
      }
      sample(std::string(name) + "_bucket", std::string("le=\"") + le + "\"",
             static_cast<double>(cumulative));
    }
    sample(std::string(name) + "_sum", "", static_cast<double>(v.sum_us) / 1e6);
    sample(std::string(name) + "_count", "", static_cast<double>(cumulative));
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

std::string backend_labels(const BackendMetrics& b) {
  return "upstream=\"" + prometheus_label_value(b.upstream) + "\",backend=\"" + prometheus_label_value(b.name) +
         "\"";
}

std::string listener_labels(const ListenerMetrics& l) {
  return "listener=\"" + prometheus_label_value(l.name) + "\",address=\"" + prometheus_label_value(l.address) + "\"";
}

// The names and meanings of the Prometheus client libraries' process collector, so the usual
// dashboards and alerts work unchanged.
void render_process(PromWriter& w, const ProcessStats& p) {
  w.family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
  w.sample("process_cpu_seconds_total", "", p.cpu_seconds);
  w.family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
  w.sample("process_resident_memory_bytes", "", static_cast<double>(p.resident_bytes));
  w.family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
  w.sample("process_virtual_memory_bytes", "", static_cast<double>(p.virtual_bytes));
  w.family("process_open_fds", "gauge", "Number of open file descriptors.");
  w.sample("process_open_fds", "", static_cast<double>(p.open_fds));
  w.family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
  w.sample("process_max_fds", "", static_cast<double>(p.max_fds));
  w.family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
  w.sample("process_start_time_seconds", "", p.start_time_seconds);
}

template <typename Field>
void per_backend(PromWriter& w, const MetricsSnapshot& m, const char* name, const char* type,
                 const char* help, Field field) {
  w.family(name, type, help);
  for (const auto& b : m.backends) w.sample(name, backend_labels(b), static_cast<double>(field(b)));
}

uint64_t total_accepted(const MetricsSnapshot& m) {
  uint64_t n = 0;
  for (const auto& w : m.workers) n += w.accepted;
  return n;
}

int64_t total_active(const MetricsSnapshot& m) {
  int64_t n = 0;
  for (const auto& w : m.workers) n += w.active_connections;
  return n;
}

}  // namespace

std::string render_prometheus(const MetricsSnapshot& m) {
  PromWriter w;
  w.family("limpet_build_info", "gauge", "What this limpet was built from; always 1.");
  w.sample("limpet_build_info",
           "version=\"" + prometheus_label_value(m.version) + "\",compiler=\"" +
               prometheus_label_value(m.build.compiler) + "\",libuv=\"" + prometheus_label_value(m.build.libuv) +
               "\",openssl=\"" + prometheus_label_value(m.build.openssl) + "\"",
           1);
  if (m.process.valid) render_process(w, m.process);
  w.family("limpet_config_generation", "gauge", "Generation of the running configuration.");
  w.sample("limpet_config_generation", "", static_cast<double>(m.generation));
  w.family("limpet_uptime_seconds", "gauge", "Seconds since start.");
  w.sample("limpet_uptime_seconds", "", m.uptime_seconds);
  w.family("limpet_reloads_total", "counter", "Configuration reloads by result.");
  w.sample("limpet_reloads_total", "result=\"ok\"", static_cast<double>(m.reloads_ok));
  w.sample("limpet_reloads_total", "result=\"failed\"", static_cast<double>(m.reloads_failed));

  w.family("limpet_connections_accepted_total", "counter", "Client connections accepted.");
  w.sample("limpet_connections_accepted_total", "", static_cast<double>(total_accepted(m)));
  w.family("limpet_connections_rejected_total", "counter",
           "Client connections closed at once because max_connections was reached.");
  uint64_t rejected = 0;
  for (const auto& wk : m.workers) rejected += wk.rejected;
  w.sample("limpet_connections_rejected_total", "", static_cast<double>(rejected));
  w.family("limpet_active_connections", "gauge", "Open client connections.");
  w.sample("limpet_active_connections", "", static_cast<double>(total_active(m)));
  w.family("limpet_listener_connections_accepted_total", "counter", "Client connections accepted, by listener.");
  for (const auto& l : m.listeners) {
    w.sample("limpet_listener_connections_accepted_total", listener_labels(l), static_cast<double>(l.accepted));
  }
  w.family("limpet_listener_active_connections", "gauge", "Open client connections, by listener.");
  for (const auto& l : m.listeners) {
    w.sample("limpet_listener_active_connections", listener_labels(l), static_cast<double>(l.active_connections));
  }
  w.family("limpet_listener_tunnels", "gauge", "Open WebSocket tunnels, by listener.");
  for (const auto& l : m.listeners) {
    w.sample("limpet_listener_tunnels", listener_labels(l), static_cast<double>(l.tunnels));
  }
  w.family("limpet_worker_active_connections", "gauge", "Open client connections per worker.");
  for (size_t i = 0; i < m.workers.size(); ++i) {
    w.sample("limpet_worker_active_connections", "worker=\"" + std::to_string(i) + "\"",
             static_cast<double>(m.workers[i].active_connections));
  }

  w.family("limpet_responses_total", "counter", "Responses sent to clients by status class.");
  for (int c = 1; c <= 5; ++c) {
    w.sample("limpet_responses_total", "code=\"" + std::to_string(c) + "xx\"",
             static_cast<double>(m.responses_by_class[c]));
  }
  w.counter("limpet_upstream_retries_total",
            "Requests sent to another backend after a connect failure.",
            m.retries);
  w.counter("limpet_client_aborts_total",
            "Requests whose client closed the connection before the answer was complete (logged as 499 "
            "when no response byte had been sent).",
            m.client_aborts);
  w.counter("limpet_http2_connections_total", "Client connections served in HTTP/2 (ALPN h2, or h2c prior knowledge).",
            m.http2_connections);
  w.counter("limpet_http2_streams_total", "HTTP/2 requests (streams), also counted in limpet_requests_total.",
            m.http2_streams);
  w.counter("limpet_http2_client_resets_total",
            "HTTP/2 streams the client reset (RST_STREAM) before their answer was complete.",
            m.http2_resets_by_client);
  w.counter("limpet_http2_websockets_total",
            "WebSockets over HTTP/2: extended CONNECTs (RFC 8441), each an HTTP/1.1 upgrade to its backend.",
            m.http2_websockets);
  w.counter("limpet_upstream_stale_resends_total",
            "Requests sent again on a new connection because the pooled one closed before any response byte.",
            m.stale_resends);
  w.counter("limpet_upstream_pool_not_fresh_total",
            "Pooled connections passed over for a request that may not be resent (it carries a session "
            "or a body), because they had been idle too long to be sure the backend keeps them.",
            m.pool_not_fresh);
  w.family("limpet_fds", "gauge",
           "File descriptors: the limit (RLIMIT_NOFILE), the budget for client connections (the limit "
           "less a reserve), and the sockets in use (clients, backends, pooled, checks, store).");
  w.sample("limpet_fds", "kind=\"limit\"", static_cast<double>(m.fd_limit));
  w.sample("limpet_fds", "kind=\"budget\"", static_cast<double>(m.fd_capacity));
  w.sample("limpet_fds", "kind=\"in_use\"", static_cast<double>(m.fd_in_use));
  w.counter("limpet_fd_budget_full_total",
            "Times the fd budget filled up and the listeners paused (new connections waited in the backlog).",
            m.fd_budget_full);
  w.counter("limpet_handshake_retries_total",
            "New sessions (Engine.IO handshakes, WebSocket upgrades) sent to another backend after a "
            "failure status (health.failure_statuses) or no answer within handshake_timeout.",
            m.handshake_retries);
  w.family("limpet_proxy_protocol_rejected_total", "counter",
           "Connections to proxy_protocol listeners closed before any HTTP: from an address outside "
           "trusted_proxies, with a malformed PROXY header, or without one within proxy_protocol_timeout.");
  w.sample("limpet_proxy_protocol_rejected_total", "reason=\"untrusted\"",
           static_cast<double>(m.proxy_protocol_untrusted));
  w.sample("limpet_proxy_protocol_rejected_total", "reason=\"malformed\"",
           static_cast<double>(m.proxy_protocol_malformed));
  w.sample("limpet_proxy_protocol_rejected_total", "reason=\"timeout\"", static_cast<double>(m.proxy_protocol_timeout));
  w.family("limpet_bytes_total", "counter", "Bytes exchanged with clients.");
  w.sample("limpet_bytes_total", "direction=\"in\"", static_cast<double>(m.bytes_from_clients));
  w.sample("limpet_bytes_total", "direction=\"out\"", static_cast<double>(m.bytes_to_clients));

  per_backend(w, m, "limpet_backend_up", "gauge", "1 if the backend takes traffic.",
              [](const BackendMetrics& b) { return b.state == "up" || b.state == "draining" ? 1 : 0; });
  per_backend(w, m, "limpet_backend_draining", "gauge", "1 if the backend takes no new sessions.",
              [](const BackendMetrics& b) { return b.state == "draining" ? 1 : 0; });
  per_backend(w, m, "limpet_backend_requests_total", "counter", "Requests sent to the backend.",
              [](const BackendMetrics& b) { return b.requests; });
  per_backend(w, m, "limpet_backend_failures_total", "counter",
              "Connect failures and timeouts against the backend.",
              [](const BackendMetrics& b) { return b.failures; });
  w.family("limpet_backend_responses_total", "counter",
           "Responses to requests sent to the backend, by status class (limpet's 502/504 for it included).");
  for (const auto& b : m.backends) {
    for (int c = 1; c <= 5; ++c) {
      w.sample("limpet_backend_responses_total", backend_labels(b) + ",code=\"" + std::to_string(c) + "xx\"",
               static_cast<double>(b.responses_by_class[c]));
    }
  }
  w.family("limpet_health_checks_total", "counter", "Active health checks by result.");
  for (const auto& b : m.backends) {
    if (b.health_check.empty()) continue;
    const std::string labels = backend_labels(b);
    w.sample("limpet_health_checks_total", labels + ",result=\"ok\"", static_cast<double>(b.checks_ok));
    w.sample("limpet_health_checks_total", labels + ",result=\"failed\"", static_cast<double>(b.checks_failed));
  }
  per_backend(w, m, "limpet_backend_in_flight", "gauge", "Requests in flight plus open tunnels.",
              [](const BackendMetrics& b) { return b.in_flight; });
  per_backend(w, m, "limpet_backend_tunnels", "gauge", "Open WebSocket tunnels.",
              [](const BackendMetrics& b) { return b.tunnels; });
  per_backend(w, m, "limpet_backend_sessions", "gauge",
              "Live sessions: affinity entries plus open tunnels, an upgraded Engine.IO session once.",
              [](const BackendMetrics& b) { return b.live_sessions(); });

  w.family("limpet_tunnels_opened_total", "counter", "WebSocket tunnels opened.");
  w.sample("limpet_tunnels_opened_total", "", static_cast<double>(m.tunnels_opened));
  w.family("limpet_tunnels_closed_cleanly_total", "counter",
           "Tunnels closed by limpet with a Close frame both sides answered.");
  w.sample("limpet_tunnels_closed_cleanly_total", "", static_cast<double>(m.tunnels_closed_cleanly));
  w.family("limpet_websocket_messages_total", "counter", "WebSocket messages relayed.");
  w.sample("limpet_websocket_messages_total", "direction=\"to_backend\"",
           static_cast<double>(m.ws_messages_to_backend));
  w.sample("limpet_websocket_messages_total", "direction=\"to_client\"",
           static_cast<double>(m.ws_messages_to_client));
  w.family("limpet_tunnels_refused_frames_total", "counter",
           "Tunnels closed by limpet over a frame it would not forward, by reason.");
  w.sample("limpet_tunnels_refused_frames_total", "reason=\"too_big\"", static_cast<double>(m.ws_refused_too_big));
  w.sample("limpet_tunnels_refused_frames_total", "reason=\"protocol_error\"",
           static_cast<double>(m.ws_refused_protocol_error));

  w.family("limpet_affinity_entries", "gauge", "Sessions in the affinity table.");
  w.sample("limpet_affinity_entries", "", static_cast<double>(m.affinity.entries));
  w.family("limpet_affinity_lookups_total", "counter", "Affinity lookups by result.");
  w.sample("limpet_affinity_lookups_total", "result=\"hit\"", static_cast<double>(m.affinity.hits));
  w.sample("limpet_affinity_lookups_total", "result=\"miss\"", static_cast<double>(m.affinity.misses));
  w.family("limpet_affinity_evictions_total", "counter", "Entries evicted by the size cap.");
  w.sample("limpet_affinity_evictions_total", "", static_cast<double>(m.affinity.evictions));
  w.family("limpet_affinity_expirations_total", "counter", "Entries expired by session_ttl.");
  w.sample("limpet_affinity_expirations_total", "", static_cast<double>(m.affinity.expirations));
  w.family("limpet_affinity_learned_total", "counter", "Session ids learned from handshakes.");
  w.sample("limpet_affinity_learned_total", "", static_cast<double>(m.affinity.learned));
  w.family("limpet_handshakes_unparsable_total", "counter",
           "Engine.IO handshake responses whose sid could not be read.");
  w.sample("limpet_handshakes_unparsable_total", "",
           static_cast<double>(m.affinity.unparsable_handshakes));

  if (m.session_store.enabled) {
    const SessionStoreMetrics& st = m.session_store;
    w.family("limpet_session_store_up", "gauge", "1 if every connection to the session store is ready.");
    w.sample("limpet_session_store_up", "", st.up ? 1 : 0);
    w.family("limpet_session_store_connection_errors_total", "counter",
             "Session store connections lost or not opened.");
    w.sample("limpet_session_store_connection_errors_total", "", static_cast<double>(st.connection_errors));
    w.family("limpet_session_store_lookups_total", "counter",
             "Lookups of sids this instance did not know, by result.");
    for (const auto& [result, n] : st.lookups) {
      w.sample("limpet_session_store_lookups_total", "result=\"" + result + "\"", static_cast<double>(n));
    }
    w.family("limpet_session_store_publishes_total", "counter",
             "Learned sids written before their handshake response was released, by result.");
    for (const auto& [result, n] : st.publishes) {
      w.sample("limpet_session_store_publishes_total", "result=\"" + result + "\"", static_cast<double>(n));
    }
    w.family("limpet_session_store_refreshes_total", "counter", "Session TTL refreshes sent.");
    w.sample("limpet_session_store_refreshes_total", "", static_cast<double>(st.refreshes));
    w.family("limpet_session_store_deletes_total", "counter", "Sessions deleted when their WebSocket closed.");
    w.sample("limpet_session_store_deletes_total", "", static_cast<double>(st.deletes));
    w.histogram("limpet_session_store_latency_seconds", "Round trip of session store lookups and publishes.",
                st.latency);
    per_backend(w, m, "limpet_backend_fleet_sessions", "gauge",
                "The other instances' live sessions on the backend, as shared through the session store.",
                [](const BackendMetrics& b) { return b.fleet_sessions; });
  }

  w.histogram("limpet_request_duration_seconds", "Client request duration, head to last byte.",
              m.request_latency);
  w.histogram("limpet_upstream_first_byte_seconds",
              "Request handed to a backend connection (a new one still connecting) to its first response byte.",
              m.upstream_first_byte);
  w.histogram("limpet_tunnel_duration_seconds", "WebSocket tunnels, 101 to both connections closed.",
              m.tunnel_duration);
  w.histogram("limpet_upstream_connect_duration_seconds", "Time to connect to a backend.",
              m.connect_latency);
  return w.take();
}

std::string render_json(const MetricsSnapshot& m) {
  std::string o = "{";
  auto num = [&o](const char* key, double v, bool comma = true) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "\"%s\":%.17g", key, v);
    o += buf;
    if (comma) o += ',';
  };
  auto str = [&o](const char* key, const std::string& v, bool comma = true) {
    o += "\"";
    o += key;
    o += "\":\"" + json_escape(v) + "\"";
    if (comma) o += ',';
  };
  str("version", m.version);
  str("config_file", m.config_file);
  num("generation", static_cast<double>(m.generation));
  num("uptime_seconds", m.uptime_seconds);
  num("reloads_ok", static_cast<double>(m.reloads_ok));
  num("reloads_failed", static_cast<double>(m.reloads_failed));
  num("active_connections", static_cast<double>(total_active(m)));
  num("connections_accepted", static_cast<double>(total_accepted(m)));
  num("tunnels_opened", static_cast<double>(m.tunnels_opened));
  num("ws_messages_to_backend", static_cast<double>(m.ws_messages_to_backend));
  num("ws_messages_to_client", static_cast<double>(m.ws_messages_to_client));
  o += "\"http2\":{";
  num("connections", static_cast<double>(m.http2_connections));
  num("streams", static_cast<double>(m.http2_streams));
  num("client_resets", static_cast<double>(m.http2_resets_by_client));
  num("websockets", static_cast<double>(m.http2_websockets), false);
  o += "},\"responses\":{";
  for (int c = 1; c <= 5; ++c) {
    o += "\"" + std::to_string(c) + "xx\":" + std::to_string(m.responses_by_class[c]);
    if (c < 5) o += ',';
  }
  o += "},\"affinity\":{";
  num("entries", static_cast<double>(m.affinity.entries));
  num("hits", static_cast<double>(m.affinity.hits));
  num("misses", static_cast<double>(m.affinity.misses));
  num("evictions", static_cast<double>(m.affinity.evictions));
  num("learned", static_cast<double>(m.affinity.learned));
  num("unparsable_handshakes", static_cast<double>(m.affinity.unparsable_handshakes), false);
  o += "},\"session_store\":{";
  const SessionStoreMetrics& st = m.session_store;
  o += st.enabled ? "\"enabled\":true," : "\"enabled\":false";
  if (st.enabled) {
    o += st.up ? "\"up\":true," : "\"up\":false,";
    str("address", st.address);
    str("instance", st.instance);
    num("connection_errors", static_cast<double>(st.connection_errors));
    auto by_result = [&o](const char* key, const std::vector<std::pair<std::string, uint64_t>>& counts) {
      o += "\"" + std::string(key) + "\":{";
      for (size_t i = 0; i < counts.size(); ++i) {
        o += "\"" + counts[i].first + "\":" + std::to_string(counts[i].second) + (i + 1 < counts.size() ? "," : "");
      }
      o += "},";
    };
    by_result("lookups", st.lookups);
    by_result("publishes", st.publishes);
    num("refreshes", static_cast<double>(st.refreshes));
    num("deletes", static_cast<double>(st.deletes), false);
  }
  o += "},\"workers\":[";
  for (size_t i = 0; i < m.workers.size(); ++i) {
    const auto& w = m.workers[i];
    o += "{";
    num("accepted", static_cast<double>(w.accepted));
    num("requests", static_cast<double>(w.requests));
    num("active_connections", static_cast<double>(w.active_connections), false);
    o += i + 1 < m.workers.size() ? "}," : "}";
  }
  o += "],\"backends\":[";
  for (size_t i = 0; i < m.backends.size(); ++i) {
    const auto& b = m.backends[i];
    o += "{";
    str("upstream", b.upstream);
    str("name", b.name);
    str("address", b.address);
    str("state", b.state);
    num("weight", b.weight);
    num("requests", static_cast<double>(b.requests));
    num("failures", static_cast<double>(b.failures));
    o += "\"responses\":{";
    for (int c = 1; c <= 5; ++c) num((std::to_string(c) + "xx").c_str(), static_cast<double>(b.responses_by_class[c]), c < 5);
    o += "},";
    if (!b.health_check.empty()) {
      o += "\"health\":{";
      str("type", b.health_check);
      num("ok", static_cast<double>(b.checks_ok));
      num("failed", static_cast<double>(b.checks_failed));
      str("last", b.last_check, false);
      o += "},";
    }
    num("in_flight", static_cast<double>(b.in_flight));
    num("tunnels", static_cast<double>(b.tunnels));
    num("sessions", static_cast<double>(b.live_sessions()));
    num("fleet_sessions", static_cast<double>(b.fleet_sessions), false);
    o += i + 1 < m.backends.size() ? "}," : "}";
  }
  o += "]}";
  return o;
}

// The status page's "last check" cell; the script below writes the same text.
std::string check_text(const BackendMetrics& b) {
  if (b.health_check.empty()) return "passive only";
  return b.health_check + ": " + (b.last_check.empty() ? "-" : b.last_check);
}

// The page renders the same rows on the server (works without JavaScript) and refreshes itself
// from /status every two seconds, computing request rates from successive samples. It says when
// its numbers are stale (limpet stopped answering), and offers drain/enable/disable per backend
// through the admin API with a token typed into the page.
std::string render_html(const MetricsSnapshot& m) {
  std::string rows;
  for (const auto& b : m.backends) {
    rows += "<tr class=\"state-" + html_escape(b.state) + "\" data-backend=\"" + html_escape(b.name) +
            "\"><td>" + html_escape(b.upstream) + "</td><td>" + html_escape(b.name) + "</td><td>" +
            html_escape(b.address) + "</td><td class=\"state\">" + html_escape(b.state) +
            "</td><td>" + std::to_string(b.weight) + "</td><td class=\"sessions\">" +
            std::to_string(b.live_sessions()) + "</td><td class=\"tunnels\">" +
            std::to_string(b.tunnels) + "</td><td class=\"requests\">" +
            std::to_string(b.requests) + "</td><td class=\"rate\">-</td><td class=\"errors\">" +
            std::to_string(b.responses_by_class[5]) + "</td><td class=\"failures\">" +
            std::to_string(b.failures) + "</td><td class=\"check\">" + html_escape(check_text(b)) +
            "</td><td class=\"actions\"></td></tr>\n";
  }
  char summary[256];
  std::snprintf(summary, sizeof summary,
                "generation %" PRIu64 " &middot; up %.0f s &middot; %zu workers &middot; "
                "%" PRIu64 " sessions known",
                m.generation, m.uptime_seconds, m.workers.size(), m.affinity.entries);
  std::string store_text;  // the script below writes the same text
  if (m.session_store.enabled) {
    store_text = " \u00b7 session store " + m.session_store.address + (m.session_store.up ? " up" : " DOWN");
  }
  return R"(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>limpet status</title>
<style>
body{font:14px system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:20px;margin:0 0 .2em}
#summary{color:#555;margin-bottom:1em}
table{border-collapse:collapse;min-width:60em}
th,td{border:1px solid #ccc;padding:4px 10px;text-align:right}
th{background:#eee}
td:nth-child(-n+4){text-align:left}
tr.state-up td.state{background:#c8f0c8}
tr.state-down td.state{background:#f5b5b5}
tr.state-draining td.state{background:#f8e3a0}
tr.state-disabled td.state{background:#ddd}
#stale{background:#f5b5b5;padding:6px 10px;margin-bottom:1em;font-weight:600}
body.stale table{opacity:.55}
td.actions button{margin:0 2px}
#action-result.error{color:#a00}
</style></head><body>
<h1>limpet )" + html_escape(m.version) + R"(</h1>
<div id="stale" hidden></div>
<div id="summary">)" + summary + html_escape(store_text) + R"(</div>
<form id="actions" onsubmit="return false">
<label>admin token <input type="password" id="token" autocomplete="off" size="24"></label>
<span id="action-result"></span></form>
<table id="backends"><thead><tr><th>upstream</th><th>backend</th><th>address</th><th>state</th>
<th>weight</th><th>sessions</th><th>tunnels</th><th>requests</th><th>req/s</th><th>5xx</th><th>failed connects</th><th>last check</th><th>actions</th></tr>
</thead><tbody>
)" + rows + R"(</tbody></table>
<script>
let last = null;
let lastOk = Date.now();  // the server-rendered rows are fresh when the page loads
const token = document.getElementById('token');
token.value = sessionStorage.getItem('limpet-token') || '';
function cell(tr, cls, v) { tr.querySelector('td.' + cls).textContent = v; }
// limpet stopped (or answers with an error): keep the last rows, dimmed, and say how old they are.
function markStale(why) {
  document.body.classList.add('stale');
  const banner = document.getElementById('stale');
  banner.hidden = false;
  banner.textContent = `stale: ${why}; these numbers are from ${new Date(lastOk).toLocaleTimeString()}, ` +
    `${Math.round((Date.now() - lastOk) / 1000)} s ago`;
}
function markFresh() {
  document.body.classList.remove('stale');
  document.getElementById('stale').hidden = true;
}
// The admin API's POST /backends/NAME/ACTION, with the token typed above (kept for this tab only).
async function act(name, action) {
  sessionStorage.setItem('limpet-token', token.value);
  const out = document.getElementById('action-result');
  try {
    const r = await fetch('backends/' + encodeURIComponent(name) + '/' + action,
                          {method: 'POST', headers: token.value ? {Authorization: 'Bearer ' + token.value} : {}});
    out.textContent = (r.ok ? '' : r.status + ': ') + (await r.text()).trim();
    out.className = r.ok ? 'ok' : 'error';
  } catch (e) {
    out.textContent = 'failed: ' + e.message;
    out.className = 'error';
  }
  refresh();
}
function actionButtons(b) {
  const td = document.createElement('td');
  td.className = 'actions';
  for (const [action, useless] of [['drain', b.state === 'draining'], ['enable', b.state === 'up'],
                                   ['disable', b.state === 'disabled']]) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = action;
    button.dataset.action = action;
    button.disabled = useless;
    button.onclick = () => act(b.name, action);
    td.appendChild(button);
  }
  return td;
}
async function refresh() {
  try {
    const r = await fetch('status', {cache: 'no-store'});
    if (!r.ok) throw new Error('GET /status answered ' + r.status);
    const s = await r.json();
    const now = Date.now();
    const body = document.querySelector('#backends tbody');
    const rows = s.backends.map(b => {
      const tr = document.createElement('tr');
      tr.className = 'state-' + b.state;
      tr.dataset.backend = b.name;
      for (const [cls, v] of [['', b.upstream], ['', b.name], ['', b.address], ['state', b.state],
          ['', b.weight], ['sessions', b.sessions], ['tunnels', b.tunnels],
          ['requests', b.requests], ['rate', '-'], ['errors', b.responses['5xx']], ['failures', b.failures],
          ['check', b.health ? `${b.health.type}: ${b.health.last || '-'}` : 'passive only']]) {
        const td = document.createElement('td');
        if (cls) td.className = cls;
        td.textContent = v;
        tr.appendChild(td);
      }
      tr.appendChild(actionButtons(b));
      if (last && last.t < now) {
        const prev = last.s.backends.find(p => p.name === b.name && p.upstream === b.upstream);
        if (prev) cell(tr, 'rate', ((b.requests - prev.requests) * 1000 / (now - last.t)).toFixed(1));
      }
      return tr;
    });
    body.replaceChildren(...rows);
    document.getElementById('summary').textContent =
      `generation ${s.generation} · up ${Math.round(s.uptime_seconds)} s · ${s.workers.length} workers · ` +
      `${s.affinity.entries} sessions known · HTTP/2: ${s.http2.connections} connections, ${s.http2.streams} streams` +
      (s.session_store.enabled ? ` · session store ${s.session_store.address} ${s.session_store.up ? 'up' : 'DOWN'}` : '');
    last = {s, t: now};
    lastOk = now;
    markFresh();
  } catch (e) {
    markStale(e instanceof TypeError ? 'limpet is not answering' : e.message);  // the next tick retries
  }
}
setInterval(refresh, 2000);
refresh();
</script></body></html>
)";
}

}  // namespace limpet::admin
