#include "limpet/util/process_stats.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace limpet {
namespace {

// The whole of a small /proc file, NUL-terminated; false if it cannot be read.
bool read_small_file(const char* path, char* buf, size_t size) {
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return false;
  size_t n = std::fread(buf, 1, size - 1, f);
  std::fclose(f);
  buf[n] = '\0';
  return n > 0;
}

// Boot time (the `btime` line of /proc/stat), in seconds since the epoch; 0 if unknown.
double boot_time_seconds() {
  FILE* f = std::fopen("/proc/stat", "re");
  if (f == nullptr) return 0;
  char line[256];
  double btime = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "btime ", 6) == 0) {
      btime = std::strtod(line + 6, nullptr);
      break;
    }
  }
  std::fclose(f);
  return btime;
}

uint64_t count_open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  uint64_t n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // not the directory's own descriptor
}

}  // namespace

bool parse_proc_stat(const char* line, ProcStat& out) {
  // Field 2 is "(comm)", and comm may contain ") ": the fields after it start after the last ')'.
  const char* close = std::strrchr(line, ')');
  if (close == nullptr) return false;
  // Fields 3.. : state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt
  // utime(14) stime(15) cutime cstime priority nice num_threads itrealvalue starttime(22)
  // vsize(23) rss(24).
  unsigned long long v[22] = {};
  const char* p = close + 1;
  for (int field = 3; field <= 24; ++field) {
    while (*p == ' ') ++p;
    if (*p == '\0') return false;
    char* end = nullptr;
    if (field == 3) {  // the state letter
      end = const_cast<char*>(p + 1);
    } else {
      v[field - 3] = std::strtoull(p, &end, 10);
      if (end == p) return false;
    }
    p = end;
  }
  out.utime_ticks = v[14 - 3];
  out.stime_ticks = v[15 - 3];
  out.start_ticks = v[22 - 3];
  out.vsize_bytes = v[23 - 3];
  out.rss_pages = v[24 - 3];
  return true;
}

ProcessStats read_process_stats() {
  ProcessStats stats;
  char line[1024];
  ProcStat ps;
  if (!read_small_file("/proc/self/stat", line, sizeof line) || !parse_proc_stat(line, ps)) return stats;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  stats.cpu_seconds = static_cast<double>(ps.utime_ticks + ps.stime_ticks) / ticks;
  stats.resident_bytes = ps.rss_pages * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  stats.virtual_bytes = ps.vsize_bytes;
  stats.start_time_seconds = boot_time_seconds() + static_cast<double>(ps.start_ticks) / ticks;
  stats.open_fds = count_open_fds();
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) stats.max_fds = nofile.rlim_cur;
  stats.valid = true;
  return stats;
}

}  // namespace limpet
