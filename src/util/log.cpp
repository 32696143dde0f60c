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
// A log destination whose file can be swapped (reload, SIGUSR1) while workers write to it.
struct Target {
  std::atomic<int> fd;
  std::string path;  // guarded by g_target_mu
};
Target g_error{{STDERR_FILENO}, "stderr"};
Target g_access{{-1}, "off"};
std::mutex g_target_mu;  // guards paths and fd swaps (rare: startup, reload, SIGUSR1)

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
  if (path == "off") return -1;
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0 && error) *error = path + ": " + std::strerror(errno);
  return fd;
}

bool switch_target(Target& target, const std::string& path, std::string* error) {
  int fd = open_path(path, error);
  if (fd < 0 && path != "off") return false;
  std::lock_guard lock(g_target_mu);
  int old = target.fd.exchange(fd);
  // A writer may still hold the old fd for one write: a closed fd fails that write harmlessly
  // (EBADF) rather than crashing; fds are not reused before the next open here.
  if (old > STDERR_FILENO && old != fd) ::close(old);
  target.path = path;
  return true;
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
  return switch_target(g_error, path, error);
}

bool open_access(const std::string& path, std::string* error) {
  return switch_target(g_access, path, error);
}

bool access_enabled() { return g_access.fd.load(std::memory_order_relaxed) >= 0; }

void access(const std::string& line) {
  int fd = g_access.fd.load(std::memory_order_relaxed);
  if (fd < 0) return;
  ssize_t ignored = ::write(fd, line.data(), line.size());
  (void)ignored;
}

bool reopen(std::string* error) {
  std::string error_path, access_path;
  {
    std::lock_guard lock(g_target_mu);
    error_path = g_error.path;
    access_path = g_access.path;
  }
  return switch_target(g_error, error_path, error) && switch_target(g_access, access_path, error);
}

size_t format_time(char* buf, size_t size) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  tm parts{};
  gmtime_r(&tv.tv_sec, &parts);
  int n = std::snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", parts.tm_year + 1900,
                        parts.tm_mon + 1, parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec,
                        static_cast<int>(tv.tv_usec / 1000));
  return n < 0 ? 0 : static_cast<size_t>(n);
}

void write(Level level, const char* fmt, ...) {
  char line[2048];
  size_t t = format_time(line, sizeof line);
  int n = static_cast<int>(t) + std::snprintf(line + t, sizeof line - t, " [%s] ", level_name(level));
  va_list args;
  va_start(args, fmt);
  int m = std::vsnprintf(line + n, sizeof line - static_cast<size_t>(n) - 1, fmt, args);
  va_end(args);
  size_t len = static_cast<size_t>(n) + (m < 0 ? 0 : static_cast<size_t>(m));
  if (len > sizeof line - 2) len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t ignored = ::write(g_error.fd.load(std::memory_order_relaxed), line, len);
  (void)ignored;
}

}  // namespace limpet::log
