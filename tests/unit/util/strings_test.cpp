// ASCII helpers shared by http, balancer and config: iequals, ascii_lowercase, trim, hex_value.
#include "limpet/util/strings.hpp"

#include <gtest/gtest.h>

#include <clocale>

namespace limpet {
namespace {

TEST(Strings, IequalsIgnoresAsciiCaseOnly) {
  EXPECT_TRUE(iequals("Content-Length", "content-length"));
  EXPECT_TRUE(iequals("", ""));
  EXPECT_TRUE(iequals("X-FORWARDED-FOR", "x-forwarded-for"));
  EXPECT_FALSE(iequals("host", "hosts"));
  EXPECT_FALSE(iequals("host", "hist"));
  // '@' + 32 is '`' and '[' + 32 is '{': only letters fold.
  EXPECT_FALSE(iequals("@[", "`{"));
  // Bytes above 0x7f are compared as they are, whatever the locale says about them.
  EXPECT_FALSE(iequals("caf\xc3\xa9", "CAF\xc3\x89"));
  EXPECT_TRUE(iequals("caf\xc3\xa9", "CAF\xc3\xa9"));
  EXPECT_FALSE(iequals(std::string_view("a\0b", 3), std::string_view("a\0c", 3)));
}

TEST(Strings, LowercaseDoesNotDependOnTheLocale) {
  const char* old = std::setlocale(LC_CTYPE, nullptr);
  const std::string saved = old != nullptr ? old : "C";
  std::setlocale(LC_CTYPE, "C.UTF-8");  // may be missing: then the "C" locale is checked twice
  EXPECT_EQ(ascii_lowercase("Example.COM"), "example.com");
  EXPECT_EQ(ascii_lowercase("\xc3\x89T\xc3\x89"), "\xc3\x89t\xc3\x89");
  EXPECT_EQ(ascii_lowercase(""), "");
  std::setlocale(LC_CTYPE, saved.c_str());
  static_assert(ascii_lower('Z') == 'z' && ascii_lower('z') == 'z' && ascii_lower('[') == '[');
}

TEST(Strings, TrimRemovesBlanksAtBothEndsOnly) {
  EXPECT_EQ(trim("  io = abc\t"), "io = abc");
  EXPECT_EQ(trim("abc"), "abc");
  EXPECT_EQ(trim(""), "");
  EXPECT_EQ(trim(" \t \t"), "");
  EXPECT_EQ(trim("a"), "a");
  EXPECT_EQ(trim(" a "), "a");
  // Blanks are SP and HTAB only by default: a line break is not HTTP whitespace.
  EXPECT_EQ(trim("\r\nabc\n"), "\r\nabc\n");
  EXPECT_EQ(trim("\r\n abc\v\f", kWhitespace), "abc");
  EXPECT_EQ(trim("--x--", "-"), "x");
  // The result is a view into the argument, not a copy.
  const std::string_view s = "  mid  ";
  EXPECT_EQ(trim(s).data(), s.data() + 2);
}

TEST(Strings, HexValue) {
  EXPECT_EQ(hex_value('0'), 0);
  EXPECT_EQ(hex_value('9'), 9);
  EXPECT_EQ(hex_value('a'), 10);
  EXPECT_EQ(hex_value('F'), 15);
  EXPECT_EQ(hex_value('f'), 15);
  for (char c : std::string_view("gG/:@`xX \0\xff", 12)) EXPECT_EQ(hex_value(c), -1) << static_cast<int>(c);
  static_assert(hex_value('A') == 10 && hex_value('z') == -1);
}

}  // namespace
}  // namespace limpet
