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

void AccessLog::write(const AccessEntry& entry) {
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

}  // namespace limpet::proxy
