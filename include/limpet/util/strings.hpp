// ASCII text helpers for every layer: case-insensitive comparison, lowercasing, trimming, hex
// digits. ASCII only on purpose: header names, tokens, cookie names and config keywords are ASCII,
// and the C locale functions (tolower, isspace) would make the answer depend on the process locale.
// Pure functions, any thread.
#pragma once

#include <string>
#include <string_view>

namespace limpet {

// Blanks: HTTP's optional whitespace (RFC 9110 §5.6.3), which is also cookie whitespace (RFC 6265).
inline constexpr std::string_view kBlanks = " \t";
// Whitespace: what isspace() accepts in the C locale.
inline constexpr std::string_view kWhitespace = " \t\n\v\f\r";

constexpr char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

// Equal ignoring ASCII case: "Content-Length" equals "content-length"; bytes above 0x7f must match.
bool iequals(std::string_view a, std::string_view b);

// `s` with ASCII letters lowercased.
std::string ascii_lowercase(std::string_view s);

// `s` without the leading and trailing bytes that are in `blanks`.
std::string_view trim(std::string_view s, std::string_view blanks = kBlanks);

// The value of one hex digit (either case), or -1 when `c` is not one.
constexpr int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace limpet
