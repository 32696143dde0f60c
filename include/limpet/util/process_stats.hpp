// This process as the kernel accounts it (Linux /proc), for the Prometheus process_* metrics:
// CPU time, memory, file descriptors, start time. Read on the main thread at each scrape.
#pragma once

#include <cstdint>

namespace limpet {

struct ProcessStats {
  double cpu_seconds = 0;          // user + system, every thread
  uint64_t resident_bytes = 0;
  uint64_t virtual_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;            // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;   // since the Unix epoch
  bool valid = false;              // /proc could be read
};

ProcessStats read_process_stats();

// The fields of a /proc/PID/stat line that ProcessStats uses, in clock ticks and pages; false if
// the line is malformed. The command name (field 2) may hold spaces and parentheses.
struct ProcStat {
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  uint64_t start_ticks = 0;  // since boot
  uint64_t vsize_bytes = 0;
  uint64_t rss_pages = 0;
};
bool parse_proc_stat(const char* line, ProcStat& out);

}  // namespace limpet
