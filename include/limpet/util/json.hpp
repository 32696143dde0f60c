// JSON string escaping, shared by the JSON access log and the admin API's JSON (Prometheus label
// values have their own, narrower escapes: admin/metrics.cpp). Pure functions, any thread.
#pragma once

#include <string>
#include <string_view>

namespace limpet {

// Appends `s` to `out` as the inside of a JSON string: `\` and `"` escaped, control characters as
// \n or \u00XX.
void append_json_escaped(std::string& out, std::string_view s);

inline std::string json_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  append_json_escaped(out, s);
  return out;
}

}  // namespace limpet
