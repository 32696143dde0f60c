#include "limpet/util/process_stats.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <ctime>
#include <string>
#include <vector>

namespace limpet {
namespace {

TEST(ProcStat, FieldsAfterACommandNameWithSpacesAndParentheses) {
  // A real line's shape (proc(5)); the command name "a) (b" would fool a parser that splits on
  // the first ')'.
  const char* line =
      "4242 (a) (b) S 1 4242 4242 0 -1 4194560 900 0 0 0 "
      "1234 567 0 0 20 0 3 0 98765 123456789 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0";
  ProcStat ps;
  ASSERT_TRUE(parse_proc_stat(line, ps));
  EXPECT_EQ(ps.utime_ticks, 1234u);
  EXPECT_EQ(ps.stime_ticks, 567u);
  EXPECT_EQ(ps.start_ticks, 98765u);
  EXPECT_EQ(ps.vsize_bytes, 123456789u);
  EXPECT_EQ(ps.rss_pages, 2048u);
}

TEST(ProcStat, TruncatedLinesAreRefused) {
  ProcStat ps;
  EXPECT_FALSE(parse_proc_stat("4242 (limpet) S 1 4242", ps));
  EXPECT_FALSE(parse_proc_stat("no parenthesis at all", ps));
  EXPECT_FALSE(parse_proc_stat("", ps));
}

TEST(ProcessStats, SeesThisProcessOpenAFileAndTouchMemory) {
  ProcessStats before = read_process_stats();
  ASSERT_TRUE(before.valid);
  std::vector<int> fds;
  for (int i = 0; i < 10; ++i) fds.push_back(open("/dev/null", O_RDONLY | O_CLOEXEC));
  std::vector<char> touched(64 << 20, 1);  // 64 MiB, written: resident
  ProcessStats after = read_process_stats();
  EXPECT_EQ(after.open_fds, before.open_fds + 10);
  EXPECT_GE(after.resident_bytes, before.resident_bytes + (48u << 20));
  EXPECT_GE(after.virtual_bytes, after.resident_bytes);
  EXPECT_GT(after.max_fds, after.open_fds);
  EXPECT_GE(after.cpu_seconds, before.cpu_seconds);
  // Started after the machine booted and not in the future (whole seconds: ticks are 10 ms).
  EXPECT_GT(after.start_time_seconds, 1.0e9);
  EXPECT_LE(after.start_time_seconds, static_cast<double>(std::time(nullptr)) + 1);
  for (int fd : fds) close(fd);
  EXPECT_EQ(touched[12345], 1);
}

}  // namespace
}  // namespace limpet
