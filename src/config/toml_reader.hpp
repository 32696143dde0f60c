// Reads toml11 tables key by key with source positions, for the config loader (private to
// src/config: the only place besides loader.cpp that sees toml11). Every failure throws LoadError
// whose message reads "FILE:LINE:COL: what was expected". Main thread (config loading).
#pragma once

#include <toml.hpp>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "limpet/config/config.hpp"

namespace limpet::config::detail {

struct LoadError {
  std::string message;
};

// What a value is, for "got ...": a string is quoted, anything else named by its type.
std::string describe(const toml::value& v);

// "FILE:LINE:COL" of a value (of a table: its header, or the `{` of an inline table).
std::string position(const toml::value& v);
[[noreturn]] void fail_at(const toml::value& v, const std::string& what);

// toml11's multi-line syntax error turned into one "FILE:LINE:COL: message" line.
std::string format_syntax_error(const toml::syntax_error& e, const std::string& file);

template <typename E>
using Choices = std::initializer_list<std::pair<std::string_view, E>>;

// While one is alive (on this thread), every key a TableReader asks for is recorded, found or not.
// The reads are the schema: loading a file that sets every key lists it (config/schema).
class KeyRecorder {
 public:
  struct Key {
    std::string context;  // the reader's context: "[server]", "[[listener]]", "the top level"
    std::string key;
    bool present = false;  // whether the table read had it
  };

  KeyRecorder();
  ~KeyRecorder();
  KeyRecorder(const KeyRecorder&) = delete;
  KeyRecorder& operator=(const KeyRecorder&) = delete;

  const std::vector<Key>& keys() const { return keys_; }

 private:
  friend class TableReader;
  KeyRecorder* outer_;
  std::vector<Key> keys_;
};

// One TOML table. Each read marks its key as known; finish() then rejects any other key, so the
// reads themselves are the schema. Typed reads leave `out` alone when the key is absent and
// return whether it was present.
class TableReader {
 public:
  // `context` names the table in messages: "[server]", "[[listener]]", "the top level".
  TableReader(const toml::value& table, std::string context);

  const toml::value& table() const { return table_; }
  const std::string& context() const { return context_; }

  // The value under `key` (marked known), or nullptr.
  const toml::value* find(std::string_view key);
  // Marks `key` as required: finish() reports it missing (at the table header), after any
  // unknown key, since a misspelt required key is both.
  void require(std::string_view key);
  // Error at the value, prefixed with the key: "FILE:LINE:COL: key: what".
  [[noreturn]] void fail(std::string_view key, const std::string& what);

  bool read(std::string_view key, std::string& out);
  bool read(std::string_view key, bool& out);
  bool read(std::string_view key, double& out);  // integer or float
  bool read_duration(std::string_view key, Millis& out, Millis min = Millis(0));
  bool read_size(std::string_view key, size_t& out);
  // A string that must be one of `names`.
  bool read_choice(std::string_view key, std::string& out, const std::vector<std::string_view>& names);

  template <typename T>
  bool read_int(std::string_view key, T& out, int64_t min, int64_t max) {
    int64_t v = 0;
    if (!read_int64(key, v, min, max)) return false;
    out = static_cast<T>(v);
    return true;
  }

  template <typename E>
  bool read_enum(std::string_view key, E& out, Choices<E> choices) {
    std::vector<std::string_view> names;
    for (const auto& choice : choices) names.push_back(choice.first);
    std::string text;
    if (!read_choice(key, text, names)) return false;
    for (const auto& [name, value] : choices) {
      if (name == text) out = value;
    }
    return true;
  }

  // A string run through `parse`, one of the parsers of limpet/config/values.hpp (or anything
  // returning Result<T>); its message follows the position of the value.
  template <typename T, typename Parse>
  bool read_parsed(std::string_view key, T& out, Parse parse) {
    const toml::value* v = find(key);
    if (v == nullptr) return false;
    out = parse_item(key, *v, parse);
    return true;
  }

  // An array of strings, each run through `parse`; errors point at the element.
  template <typename T, typename Parse>
  bool read_list(std::string_view key, std::vector<T>& out, Parse parse) {
    const toml::value* v = find(key);
    if (v == nullptr) return false;
    if (!v->is_array()) expected(key, *v, "an array of strings");
    std::vector<T> items;
    for (const auto& item : v->as_array()) items.push_back(parse_item(key, item, parse));
    out = std::move(items);
    return true;
  }

  // An array of integers, each within [min, max]; errors point at the element.
  bool read_int_list(std::string_view key, std::vector<int>& out, int min, int max);

  // A sub-table ([a.b] or b = {...}); nullptr when absent.
  const toml::value* find_table(std::string_view key);
  // An array of tables ([[a.b]] or b = [{...}, ...]); empty when absent.
  std::vector<const toml::value*> find_tables(std::string_view key);

  // Rejects keys no read asked for (naming the first one in the file), then missing required keys.
  void finish() const;

 private:
  bool read_int64(std::string_view key, int64_t& out, int64_t min, int64_t max);
  int64_t int_in_range(std::string_view key, const toml::value& v, int64_t min, int64_t max);
  const std::string& string_of(std::string_view key, const toml::value& v);

  template <typename Parse>
  auto parse_item(std::string_view key, const toml::value& v, Parse parse) {
    auto parsed = parse(string_of(key, v));
    if (!parsed) fail_at(v, std::string(key) + ": " + parsed.message());
    return std::move(*parsed);
  }

  [[noreturn]] void expected(std::string_view key, const toml::value& v, std::string_view what);

  const toml::value& table_;
  std::string context_;
  std::vector<std::string> known_;
  std::vector<std::string> missing_;
};

}  // namespace limpet::config::detail
