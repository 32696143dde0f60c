#include "toml_reader.hpp"

#include <algorithm>
#include <cctype>
#include <sstream>
#include <tuple>

#include "limpet/config/values.hpp"
#include "limpet/util/strings.hpp"

namespace limpet::config::detail {

namespace {

thread_local KeyRecorder* t_recorder = nullptr;

std::string_view type_name(const toml::value& v) {
  switch (v.type()) {
    case toml::value_t::boolean:
      return "a boolean";
    case toml::value_t::integer:
      return "an integer";
    case toml::value_t::floating:
      return "a float";
    case toml::value_t::string:
      return "a string";
    case toml::value_t::array:
      return "an array";
    case toml::value_t::table:
      return "a table";
    case toml::value_t::offset_datetime:
    case toml::value_t::local_datetime:
    case toml::value_t::local_date:
    case toml::value_t::local_time:
      return "a date/time";
    case toml::value_t::empty:
      break;
  }
  return "nothing";
}

std::string position(const std::string& file, uint32_t line, uint32_t column) {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

// Where `key` occurs in `line` as a whole key (not inside a longer one), the last such place
// before `end`; npos if nowhere.
size_t find_key(const std::string& line, std::string_view key, size_t end) {
  const auto boundary = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0 || c == '.' ||
                                            c == '"' || c == '\'' || c == '[' || c == ']' || c == '=' || c == '{' ||
                                            c == ','; };
  size_t found = std::string::npos;
  for (size_t at = line.find(key); at != std::string::npos && at < end; at = line.find(key, at + 1)) {
    const size_t after = at + key.size();
    if ((at == 0 || boundary(line[at - 1])) && (after == line.size() || boundary(line[after]))) found = at;
  }
  return found;
}

// toml11 keeps positions for values only; a key is found on its value's line, left of the value
// (or anywhere on a table header line such as "[upstream.health]").
std::string key_position(const toml::value& v, std::string_view key) {
  const toml::source_location loc = v.location();
  const std::string& line = loc.line_str();
  size_t at = find_key(line, key, loc.column() - 1);
  if (at == std::string::npos) at = find_key(line, key, line.size());
  const auto column = at == std::string::npos ? loc.column() : static_cast<uint32_t>(at + 1);
  return position(loc.file_name(), loc.line(), column);
}

size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = up;
    }
  }
  return row[b.size()];
}

}  // namespace

std::string describe(const toml::value& v) {
  return v.is_string() ? quote_value(v.as_string().str) : std::string(type_name(v));
}

std::string position(const toml::value& v) {
  const toml::source_location loc = v.location();
  return position(loc.file_name(), loc.line(), loc.column());
}

void fail_at(const toml::value& v, const std::string& what) { throw LoadError{position(v) + ": " + what}; }

// toml11 3.7 formats its errors as
//   [error] toml::parse_key_value_pair: missing value after key-value separator '='
//    --> FILE
//      |
//    2 | workers =
//      |           ^--- expected value, but got nothing
// with a second "N | line" + underline pair for "defined twice" errors; the last pair is the culprit.
std::string format_syntax_error(const toml::syntax_error& e, const std::string& file) {
  std::istringstream in(e.what());
  std::string message;
  std::getline(in, message);
  if (message.starts_with("[error]")) message = std::string(trim(message.substr(7), kWhitespace));
  if (message.starts_with("toml::")) {
    const size_t colon = message.find(": ");
    message = colon == std::string::npos ? "" : message.substr(colon + 2);
  }
  while (!message.empty() && message.back() == '.') message.pop_back();

  uint32_t line = e.location().line();
  uint32_t column = e.location().column();
  std::string hint;
  uint32_t code_line = 0;
  for (std::string text; std::getline(in, text);) {
    const std::string t(trim(text, kWhitespace));
    if (!t.empty() && std::isdigit(static_cast<unsigned char>(t[0])) != 0) {
      code_line = static_cast<uint32_t>(std::stoul(t));
      continue;
    }
    const size_t bar = text.find("| ");
    const size_t mark = text.find_first_of("^~", bar == std::string::npos ? 0 : bar);
    if (!t.starts_with("|") || bar == std::string::npos || mark == std::string::npos || code_line == 0) continue;
    line = code_line;
    column = static_cast<uint32_t>(mark - (bar + 2) + 1);
    const size_t rest = text.find_first_not_of("^~-", mark);
    hint = rest == std::string::npos ? "" : std::string(trim(std::string_view(text).substr(rest), kWhitespace));
  }
  if (message.empty()) std::swap(message, hint);
  if (message.empty()) message = "TOML syntax error";
  if (!hint.empty() && hint != "here") message += " (" + hint + ")";
  return position(file, line, column) + ": " + message;
}

KeyRecorder::KeyRecorder() : outer_(t_recorder) { t_recorder = this; }

KeyRecorder::~KeyRecorder() { t_recorder = outer_; }

TableReader::TableReader(const toml::value& table, std::string context)
    : table_(table), context_(std::move(context)) {}

const toml::value* TableReader::find(std::string_view key) {
  known_.emplace_back(key);
  const auto& t = table_.as_table();
  const auto it = t.find(std::string(key));
  if (t_recorder != nullptr) t_recorder->keys_.push_back({context_, std::string(key), it != t.end()});
  return it == t.end() ? nullptr : &it->second;
}

void TableReader::require(std::string_view key) {
  if (find(key) == nullptr) missing_.emplace_back(key);
}

void TableReader::fail(std::string_view key, const std::string& what) {
  const toml::value* v = find(key);
  fail_at(v != nullptr ? *v : table_, std::string(key) + ": " + what);
}

void TableReader::expected(std::string_view key, const toml::value& v, std::string_view what) {
  fail_at(v, std::string(key) + ": expected " + std::string(what) + ", got " + describe(v));
}

bool TableReader::read(std::string_view key, std::string& out) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  out = string_of(key, *v);
  return true;
}

bool TableReader::read(std::string_view key, bool& out) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  if (!v->is_boolean()) expected(key, *v, "true or false");
  out = v->as_boolean();
  return true;
}

bool TableReader::read(std::string_view key, double& out) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  if (v->is_integer()) {
    out = static_cast<double>(v->as_integer());
  } else if (v->is_floating()) {
    out = v->as_floating();
  } else {
    expected(key, *v, "a number");
  }
  return true;
}

bool TableReader::read_int64(std::string_view key, int64_t& out, int64_t min, int64_t max) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  out = int_in_range(key, *v, min, max);
  return true;
}

bool TableReader::read_int_list(std::string_view key, std::vector<int>& out, int min, int max) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  if (!v->is_array()) expected(key, *v, "an array of integers");
  std::vector<int> items;
  for (const auto& item : v->as_array()) items.push_back(static_cast<int>(int_in_range(key, item, min, max)));
  out = std::move(items);
  return true;
}

int64_t TableReader::int_in_range(std::string_view key, const toml::value& v, int64_t min, int64_t max) {
  if (!v.is_integer()) expected(key, v, "an integer");
  const int64_t n = v.as_integer();
  if (n < min || n > max) {
    fail_at(v, std::string(key) + ": expected an integer from " + std::to_string(min) + " to " +
                   std::to_string(max) + ", got " + std::to_string(n));
  }
  return n;
}

bool TableReader::read_duration(std::string_view key, Millis& out, Millis min) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  if (!v->is_string()) expected(key, *v, "a duration string such as \"30s\" or \"250ms\"");
  const auto parsed = parse_duration(v->as_string().str);
  if (!parsed) fail_at(*v, std::string(key) + ": " + parsed.message());
  if (*parsed < min) {
    fail_at(*v, std::string(key) + ": expected a duration of at least " + std::to_string(min.count()) + "ms, got \"" +
                    v->as_string().str + "\"");
  }
  out = *parsed;
  return true;
}

bool TableReader::read_size(std::string_view key, size_t& out) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  if (v->is_integer()) {
    if (v->as_integer() < 0) fail_at(*v, std::string(key) + ": a size cannot be negative");
    out = static_cast<size_t>(v->as_integer());
    return true;
  }
  if (!v->is_string()) expected(key, *v, "a size such as \"16k\" or an integer");
  const auto parsed = parse_size(v->as_string().str);
  if (!parsed) fail_at(*v, std::string(key) + ": " + parsed.message());
  out = *parsed;
  return true;
}

const std::string& TableReader::string_of(std::string_view key, const toml::value& v) {
  if (!v.is_string()) expected(key, v, "a string");
  return v.as_string().str;
}

bool TableReader::read_choice(std::string_view key, std::string& out, const std::vector<std::string_view>& names) {
  const toml::value* v = find(key);
  if (v == nullptr) return false;
  const std::string& text = string_of(key, *v);
  if (std::find(names.begin(), names.end(), text) == names.end()) {
    std::string list;
    for (const auto& name : names) list += (list.empty() ? "\"" : ", \"") + std::string(name) + "\"";
    fail_at(*v, std::string(key) + ": expected one of " + list + ", got " + describe(*v));
  }
  out = text;
  return true;
}

const toml::value* TableReader::find_table(std::string_view key) {
  const toml::value* v = find(key);
  if (v != nullptr && !v->is_table()) expected(key, *v, "a table");
  return v;
}

std::vector<const toml::value*> TableReader::find_tables(std::string_view key) {
  const toml::value* v = find(key);
  std::vector<const toml::value*> tables;
  if (v == nullptr) return tables;
  const std::string what = "an array of tables ([[" + std::string(key) + "]] sections or " + std::string(key) +
                           " = [{...}])";
  if (!v->is_array()) expected(key, *v, what);
  for (const auto& item : v->as_array()) {
    if (!item.is_table()) expected(key, item, what + ", an element");
    tables.push_back(&item);
  }
  return tables;
}

void TableReader::finish() const {
  const toml::value* first = nullptr;
  std::string_view first_key;
  for (const auto& [key, value] : table_.as_table()) {
    if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
    const auto at = [](const toml::value* v) {
      const auto loc = v->location();
      return std::make_tuple(loc.line(), loc.column());
    };
    if (first == nullptr || at(&value) < at(first)) {
      first = &value;
      first_key = key;
    }
  }
  if (first == nullptr) {
    if (!missing_.empty()) fail_at(table_, context_ + ": missing required key \"" + missing_.front() + "\"");
    return;
  }
  std::string message = key_position(*first, first_key) + ": " + context_ + ": unknown key \"" +
                        std::string(first_key) + "\"";
  const auto closest = std::min_element(known_.begin(), known_.end(), [&](const auto& a, const auto& b) {
    return edit_distance(a, first_key) < edit_distance(b, first_key);
  });
  if (closest != known_.end() && edit_distance(*closest, first_key) <= 2) {
    message += " (did you mean \"" + *closest + "\"?)";
  }
  throw LoadError{message};
}

}  // namespace limpet::config::detail
