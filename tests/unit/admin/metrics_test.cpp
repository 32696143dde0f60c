// The Prometheus rendering: label values escaped as the text exposition format 0.0.4 requires
// (backslash, double quote and line feed only), whatever bytes a backend name holds.
#include "limpet/admin/metrics.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace limpet::admin {
namespace {

MetricsSnapshot one_backend(std::string upstream, std::string name) {
  MetricsSnapshot m;
  m.version = "0.1.0";
  BackendMetrics b;
  b.upstream = std::move(upstream);
  b.name = std::move(name);
  b.state = "up";
  b.requests = 7;
  m.backends.push_back(b);
  return m;
}

// The lines of `text` that start with `prefix`.
std::vector<std::string> lines_starting(const std::string& text, const std::string& prefix) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at < text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(at, end - at);
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
    at = end + 1;
  }
  return out;
}

TEST(Prometheus, LabelValuesEscapeOnlyBackslashQuoteAndNewline) {
  // A quote, a backslash, a line feed, a tab (a control byte the JSON escaper would write as
  // \u0009, which Prometheus rejects) and UTF-8 "é" (0xc3 0xa9), which goes through as bytes.
  const std::string name = "a\"b\\c\nd\te\xc3\xa9";
  const std::string text = render_prometheus(one_backend("up\"stream", name));
  const auto lines = lines_starting(text, "limpet_backend_requests_total{");
  ASSERT_EQ(lines.size(), 1u) << text;
  EXPECT_EQ(lines[0], "limpet_backend_requests_total{upstream=\"up\\\"stream\",backend=\"a\\\"b\\\\c\\nd\te\xc3\xa9\"} 7");
  EXPECT_EQ(text.find("\\u00"), std::string::npos);
  EXPECT_EQ(text.find("\\t"), std::string::npos);
}

TEST(Prometheus, EveryBackendSeriesUsesTheSameEscapedLabels) {
  const std::string text = render_prometheus(one_backend("app", "n\\1"));
  const auto lines = lines_starting(text, "limpet_backend_");
  ASSERT_FALSE(lines.empty());
  for (const auto& line : lines) {
    EXPECT_NE(line.find("{upstream=\"app\",backend=\"n\\\\1\""), std::string::npos) << line;
  }
}

TEST(Prometheus, PlainNamesAreUnchanged) {
  const std::string text = render_prometheus(one_backend("app", "node-1"));
  EXPECT_NE(text.find("limpet_backend_up{upstream=\"app\",backend=\"node-1\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("limpet_build_info{version=\"0.1.0\",compiler=\""), std::string::npos);
}

}  // namespace
}  // namespace limpet::admin
