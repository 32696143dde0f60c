// The TOML config loader (config/loader.hpp) on arbitrary text, from a buffer and from a file.
// Checked:
//  - it returns (no exception, no crash, no sanitizer report) and the buffer and the file give
//    the same answer;
//  - an error is one line "NAME:LINE:COL: message" with LINE within the text (1 .. lines + 1) and
//    COL from 1 to the line's length + 1, and a non-empty message;
//  - a loaded config has a listener and an upstream, every listener's upstream exists, and
//    loading the same text again gives the same result.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "limpet/config/loader.hpp"

namespace limpet::fuzz {
namespace {

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> lines;
  size_t start = 0;
  while (true) {
    const size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
    if (nl == std::string_view::npos) return lines;
    start = nl + 1;
  }
}

bool parse_uint(std::string_view s, size_t& pos, uint64_t& out) {
  const size_t start = pos;
  out = 0;
  while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9' && pos - start < 10) out = out * 10 + (s[pos++] - '0');
  return pos > start;
}

void check_error(const std::string& message, const std::string& name, std::string_view text) {
  const std::string where = "error \"" + escape(message) + "\" for \"" + escape(text) + "\"";
  FUZZ_CHECK(message.find('\n') == std::string::npos, "a multi-line " + where);
  FUZZ_CHECK(message.starts_with(name + ":"), "an error that does not start with the file name: " + where);
  size_t pos = name.size() + 1;
  uint64_t line = 0;
  uint64_t column = 0;
  FUZZ_CHECK(parse_uint(message, pos, line) && pos < message.size() && message[pos] == ':',
             "an error without a line: " + where);
  ++pos;
  FUZZ_CHECK(parse_uint(message, pos, column) && message.compare(pos, 2, ": ") == 0,
             "an error without a column: " + where);
  FUZZ_CHECK(message.size() > pos + 2, "an error without a message: " + where);
  const auto lines = lines_of(text);
  FUZZ_CHECK(line >= 1 && line <= lines.size() + 1, "line " + std::to_string(line) + " outside the text (" +
                                                        std::to_string(lines.size()) + " lines): " + where);
  const size_t length = line <= lines.size() ? lines[line - 1].size() : 0;
  FUZZ_CHECK(column >= 1 && column <= length + 1, "column " + std::to_string(column) + " outside line " +
                                                      std::to_string(line) + " (" + std::to_string(length) +
                                                      " bytes): " + where);
}

std::string describe(const Result<config::Config>& r) {
  if (!r.is_ok()) return "error: " + r.message();
  std::string out = "ok:";
  for (const auto& l : r->listeners) out += " listener " + l.name + "->" + l.upstream;
  for (const auto& u : r->upstreams) out += " upstream " + u.name + "/" + std::to_string(u.backends.size());
  return out;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet;
  using namespace limpet::fuzz;
  const std::string text(reinterpret_cast<const char*>(data), size);
  static const std::string path = "/tmp/limpet-fuzz-config-" + std::to_string(getpid()) + ".toml";

  const auto loaded = config::load_string(text, path);
  if (!loaded.is_ok()) {
    check_error(loaded.message(), path, text);
  } else {
    const config::Config& c = *loaded;
    FUZZ_CHECK(!c.listeners.empty() && !c.upstreams.empty(), "loaded without a listener or an upstream");
    for (const auto& l : c.listeners) {
      FUZZ_CHECK(c.find_upstream(l.upstream) != nullptr, "listener " + l.name + " names a missing upstream");
    }
  }
  const auto again = config::load_string(text, path);
  FUZZ_CHECK(describe(again) == describe(loaded), "loading twice differs: " + describe(loaded) + " / " + describe(again));

  std::FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_CHECK(f != nullptr, "cannot write " + path);
  FUZZ_CHECK(std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fclose(f) == 0, "cannot write " + path);
  const auto from_file = config::load_file(path);
  FUZZ_CHECK(describe(from_file) == describe(loaded),
             "load_file differs from load_string: " + describe(from_file) + " / " + describe(loaded));
  return 0;
}
