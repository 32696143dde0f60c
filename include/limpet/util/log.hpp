// The error log: leveled, timestamped lines to stderr or a file. Any thread; each line is written
// with one write(2) so lines from different workers never interleave.
#pragma once

#include <cstdarg>
#include <string>

namespace limpet::log {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

bool parse_level(const std::string& text, Level* out);
void set_level(Level level);
bool enabled(Level level);
// path "stderr" or a file opened for append. Returns false (and keeps the old target) on error.
bool open_target(const std::string& path, std::string* error);
// The access log: "off", "stderr" or a file. One line per call, written with one write(2).
bool open_access(const std::string& path, std::string* error);
bool access_enabled();
void access(const std::string& line);  // `line` ends with '\n'
// SIGUSR1: reopen both logs on the same paths (logrotate).
bool reopen(std::string* error);
// "2026-11-21T19:00:00.123Z" into buf (at least 32 bytes); returns the length.
size_t format_time(char* buf, size_t size);

void write(Level level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace limpet::log

#define LIMPET_LOG(level, ...)                                        \
  do {                                                                \
    if (::limpet::log::enabled(level)) ::limpet::log::write(level, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(...) LIMPET_LOG(::limpet::log::Level::kDebug, __VA_ARGS__)
#define LOG_INFO(...) LIMPET_LOG(::limpet::log::Level::kInfo, __VA_ARGS__)
#define LOG_WARN(...) LIMPET_LOG(::limpet::log::Level::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) LIMPET_LOG(::limpet::log::Level::kError, __VA_ARGS__)
