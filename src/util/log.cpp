#include "limpet/util/log.hpp"

#include <fcntl.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>

namespace limpet::log {
namespace {

std::atomic<int> g_level{static_cast<int>(Level::kInfo)};
std::atomic<int> g_fd{STDERR_FILENO};
std::mutex g_target_mu;  // guards g_path and fd swaps (rare: startup, SIGUSR1)
std::string g_path = "stderr";

const char* level_name(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "?";
}

int open_path(const std::string& path, std::string* error) {
  if (path == "stderr") return STDERR_FILENO;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 && error) *error = path + ": " + std::strerror(errno);
  return fd;
}

}  // namespace

bool parse_level(const std::string& text, Level* out) {
  static constexpr Level kAll[] = {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError};
  for (Level l : kAll) {
    if (text == level_name(l)) {
      *out = l;
      return true;
    }
  }
  return false;
}

void set_level(Level level) { g_level.store(static_cast<int>(level), std::memory_order_relaxed); }

bool enabled(Level level) { return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed); }

bool open_target(const std::string& path, std::string* error) {
  int fd = open_path(path, error);
  if (fd < 0) return false;
  std::lock_guard lock(g_target_mu);
  int old = g_fd.exchange(fd);
  if (old != STDERR_FILENO && old != fd) ::close(old);
  g_path = path;
  return true;
}

bool reopen(std::string* error) {
  std::string path;
  {
    std::lock_guard lock(g_target_mu);
    path = g_path;
  }
  return open_target(path, error);
}

void write(Level level, const char* fmt, ...) {
  char line[2048];
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm parts{};
  gmtime_r(&tv.tv_sec, &parts);
  int n = std::snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ [%s] ",
                        parts.tm_year + 1900, parts.tm_mon + 1, parts.tm_mday, parts.tm_hour,
                        parts.tm_min, parts.tm_sec, static_cast<int>(tv.tv_usec / 1000),
                        level_name(level));
  va_list args;
  va_start(args, fmt);
  int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, args);
  va_end(args);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t ignored = ::write(g_fd.load(std::memory_order_relaxed), line, len);
  (void)ignored;
}

}  // namespace limpet::log
