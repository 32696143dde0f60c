// What the admin endpoints show, as plain data collected on the main thread (runtime::Server
// gathers it from backend states, worker counters and the affinity table), and its three
// renderings: Prometheus text format 0.0.4, JSON, and the HTML status page. Pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "limpet/util/histogram.hpp"
#include "limpet/util/process_stats.hpp"

namespace limpet::admin {

struct BackendMetrics {
  std::string upstream;
  std::string name;
  std::string address;
  uint32_t weight = 1;
  std::string state;  // "up", "down", "draining", "disabled"
  int64_t in_flight = 0;
  int64_t tunnels = 0;
  int64_t sessions = 0;   // affinity entries
  int64_t upgraded = 0;   // tunnels whose session is also an affinity entry
  // Each session once: an Engine.IO session upgraded to WebSocket is an entry and a tunnel.
  int64_t live_sessions() const { return sessions + tunnels - upgraded; }
  int64_t fleet_sessions = 0;  // the other instances' live sessions here (session store)
  uint64_t requests = 0;
  uint64_t failures = 0;
  uint64_t responses_by_class[6] = {};  // index status/100
  std::string health_check;  // "" = no active check; else "http" or "engineio"
  uint64_t checks_ok = 0;
  uint64_t checks_failed = 0;
  std::string last_check;  // the last check's result ("HTTP 200", "connect: connection refused")
};

struct ListenerMetrics {
  std::string name;
  std::string address;
  uint64_t accepted = 0;
  int64_t active_connections = 0;
  int64_t tunnels = 0;
};

// What limpet was built from, for limpet_build_info: a dashboard can show which versions run.
struct BuildInfo {
  std::string version;
  std::string compiler;
  std::string libuv;
  std::string openssl;
};

struct WorkerMetrics {
  uint64_t accepted = 0;
  uint64_t rejected = 0;
  uint64_t requests = 0;
  int64_t active_connections = 0;
};

struct AffinityMetrics {
  uint64_t entries = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t expirations = 0;
  uint64_t learned = 0;
  uint64_t unparsable_handshakes = 0;
};

// [session_store], as this instance sees it. Results are named by the store layer.
struct SessionStoreMetrics {
  bool enabled = false;
  bool up = false;
  std::string address;
  std::string instance;
  std::vector<std::pair<std::string, uint64_t>> lookups;    // by result
  std::vector<std::pair<std::string, uint64_t>> publishes;  // by result
  uint64_t refreshes = 0;
  uint64_t deletes = 0;
  uint64_t connection_errors = 0;
  Histogram::Values latency;
};

struct MetricsSnapshot {
  std::string version;
  BuildInfo build;
  ProcessStats process;
  std::vector<ListenerMetrics> listeners;
  std::string config_file;
  uint64_t generation = 0;
  double uptime_seconds = 0;
  std::vector<BackendMetrics> backends;
  std::vector<WorkerMetrics> workers;
  AffinityMetrics affinity;
  SessionStoreMetrics session_store;
  uint64_t responses_by_class[6] = {};  // index status/100 (1xx..5xx)
  uint64_t tunnels_opened = 0;
  uint64_t tunnels_closed_cleanly = 0;
  uint64_t ws_messages_to_backend = 0;
  uint64_t ws_messages_to_client = 0;
  uint64_t ws_refused_too_big = 0;        // tunnels closed with 1009
  uint64_t ws_refused_protocol_error = 0; // tunnels closed with 1002
  uint64_t bytes_from_clients = 0;
  uint64_t bytes_to_clients = 0;
  uint64_t retries = 0;
  uint64_t client_aborts = 0;
  uint64_t stale_resends = 0;
  uint64_t pool_not_fresh = 0;
  uint64_t handshake_retries = 0;
  uint64_t http2_connections = 0;
  uint64_t http2_streams = 0;
  uint64_t http2_resets_by_client = 0;
  uint64_t http2_websockets = 0;
  // The fd budget (net/fd_budget.hpp).
  int64_t fd_limit = 0;
  int64_t fd_capacity = 0;
  int64_t fd_in_use = 0;
  uint64_t fd_budget_full = 0;
  // proxy_protocol listeners: connections closed before any HTTP, by reason.
  uint64_t proxy_protocol_untrusted = 0;
  uint64_t proxy_protocol_malformed = 0;
  uint64_t proxy_protocol_timeout = 0;
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  Histogram::Values request_latency;
  Histogram::Values connect_latency;
  Histogram::Values upstream_first_byte;
  LifetimeHistogram::Values tunnel_duration;
};

std::string render_prometheus(const MetricsSnapshot& m);
std::string render_json(const MetricsSnapshot& m);
std::string render_html(const MetricsSnapshot& m);

}  // namespace limpet::admin
