#include "limpet/proxy/access_log.hpp"

#include <algorithm>
#include <cstdio>

#include "limpet/util/json.hpp"
#include "limpet/util/log.hpp"

namespace limpet::proxy {
namespace {

// Lines longer than this (a huge target) are still written whole; the buffer keeps its size
// only up to here so one odd request does not pin memory.
constexpr size_t kKeptCapacity = 4096;

void append_format(std::string& out, const char* fmt, auto... args) {
  char buf[256];
  int n = std::snprintf(buf, sizeof buf, fmt, args...);
  if (n > 0) out.append(buf, std::min(static_cast<size_t>(n), sizeof buf - 1));
}

double seconds(uint64_t ns) { return static_cast<double>(ns) / 1e9; }

}  // namespace

const char* to_string(TunnelCloser by) {
  switch (by) {
    case TunnelCloser::kClient: return "client";
    case TunnelCloser::kBackend: return "backend";
    case TunnelCloser::kLimpet: return "limpet";
    case TunnelCloser::kNone: break;
  }
  return "-";
}

const char* to_string(TunnelCloseReason why) {
  switch (why) {
    case TunnelCloseReason::kClosed: return "closed";
    case TunnelCloseReason::kError: return "error";
    case TunnelCloseReason::kIdle: return "idle";
    case TunnelCloseReason::kDrain: return "drain";
    case TunnelCloseReason::kShutdown: return "shutdown";
    case TunnelCloseReason::kTooBig: return "too_big";
    case TunnelCloseReason::kProtocolError: return "protocol_error";
  }
  return "-";
}

template <typename Entry>
void AccessLog::emit(const Entry& entry) {
  if (!log::access_enabled()) return;
  line_.clear();
  if (json_) {
    format_json(entry);
  } else {
    format_text(entry);
  }
  log::access(line_);
  if (line_.capacity() > kKeptCapacity) std::string().swap(line_);
}

void AccessLog::write(const AccessEntry& entry) { emit(entry); }
void AccessLog::write(const TunnelEntry& entry) { emit(entry); }

void AccessLog::format_text(const AccessEntry& e) {
  char when[40];
  size_t when_len = log::format_time(when, sizeof when);
  const http::RequestHead& r = *e.request;
  line_.append(e.client_ip).append(" [").append(when, when_len).append("] \"");
  line_.append(r.method).append(" ").append(r.target);
  append_format(line_, " HTTP/%u.%u\" %d %llu %.6f", r.http_major, r.http_minor, e.status,
                static_cast<unsigned long long>(e.bytes), seconds(e.duration_ns));
  line_.append(" upstream=").append(e.upstream).append(" backend=").append(e.backend);
  line_.append(" reason=").append(e.reason);
  append_format(line_, " upstream_time=%.6f\n", seconds(e.upstream_time_ns));
}

void AccessLog::format_json(const AccessEntry& e) {
  char when[40];
  size_t when_len = log::format_time(when, sizeof when);
  const http::RequestHead& r = *e.request;
  line_.append("{\"time\":\"").append(when, when_len).append("\",\"client\":\"");
  append_json_escaped(line_, e.client_ip);
  line_.append("\",\"method\":\"");
  append_json_escaped(line_, r.method);
  line_.append("\",\"target\":\"");
  append_json_escaped(line_, r.target);
  append_format(line_, "\",\"status\":%d,\"bytes\":%llu,\"duration\":%.6f,\"upstream\":\"", e.status,
                static_cast<unsigned long long>(e.bytes), seconds(e.duration_ns));
  append_json_escaped(line_, e.upstream);
  line_.append("\",\"backend\":\"");
  append_json_escaped(line_, e.backend);
  line_.append("\",\"reason\":\"").append(e.reason);
  append_format(line_, "\",\"upstream_time\":%.6f}\n", seconds(e.upstream_time_ns));
}

// Its first fields line up with a request's (client, time, a quoted "request", status, bytes to
// the client, seconds), so tools that split request lines read this one too.
void AccessLog::format_text(const TunnelEntry& e) {
  char when[40];
  size_t when_len = log::format_time(when, sizeof when);
  line_.append(e.client_ip).append(" [").append(when, when_len).append("] \"WEBSOCKET closed\"");
  append_format(line_, " 101 %llu %.3f", static_cast<unsigned long long>(e.bytes_to_client),
                static_cast<double>(e.duration_ms) / 1e3);
  line_.append(" upstream=").append(e.upstream).append(" backend=").append(e.backend);
  line_.append(" sid=").append(e.session_id.empty() ? "-" : e.session_id);
  line_.append(" closed_by=").append(to_string(e.closed_by));
  line_.append(" close_reason=").append(to_string(e.reason));
  append_format(line_, " close_code=%u bytes_to_backend=%llu messages_to_backend=%llu messages_to_client=%llu\n",
                e.close_code, static_cast<unsigned long long>(e.bytes_to_backend),
                static_cast<unsigned long long>(e.messages_to_backend),
                static_cast<unsigned long long>(e.messages_to_client));
}

void AccessLog::format_json(const TunnelEntry& e) {
  char when[40];
  size_t when_len = log::format_time(when, sizeof when);
  line_.append("{\"time\":\"").append(when, when_len).append("\",\"event\":\"websocket_closed\",\"client\":\"");
  append_json_escaped(line_, e.client_ip);
  line_.append("\",\"upstream\":\"");
  append_json_escaped(line_, e.upstream);
  line_.append("\",\"backend\":\"");
  append_json_escaped(line_, e.backend);
  line_.append("\",\"sid\":\"");
  append_json_escaped(line_, e.session_id);
  line_.append("\",\"closed_by\":\"").append(to_string(e.closed_by));
  line_.append("\",\"close_reason\":\"").append(to_string(e.reason));
  append_format(line_, "\",\"close_code\":%u,\"duration\":%.3f,\"bytes_to_backend\":%llu,\"bytes_to_client\":%llu,",
                e.close_code, static_cast<double>(e.duration_ms) / 1e3,
                static_cast<unsigned long long>(e.bytes_to_backend), static_cast<unsigned long long>(e.bytes_to_client));
  append_format(line_, "\"messages_to_backend\":%llu,\"messages_to_client\":%llu}\n",
                static_cast<unsigned long long>(e.messages_to_backend),
                static_cast<unsigned long long>(e.messages_to_client));
}

}  // namespace limpet::proxy
