// JSON string escaping (access log, admin API).
#include "limpet/util/json.hpp"

#include <gtest/gtest.h>

namespace limpet {
namespace {

TEST(JsonEscape, PlainTextIsUnchanged) { EXPECT_EQ(json_escape("GET /socket.io/?EIO=4"), "GET /socket.io/?EIO=4"); }

TEST(JsonEscape, QuotesBackslashesAndControls) {
  EXPECT_EQ(json_escape(R"(a"b\c)"), R"(a\"b\\c)");
  EXPECT_EQ(json_escape("line\nnext"), "line\\nnext");
  EXPECT_EQ(json_escape(std::string_view("\x01\x1f\t", 3)), "\\u0001\\u001f\\u0009");
}

TEST(JsonEscape, BytesAboveAsciiPassThrough) {
  EXPECT_EQ(json_escape("caf\xc3\xa9 \x80"), "caf\xc3\xa9 \x80");
}

TEST(JsonEscape, AppendsToWhatIsThere) {
  std::string out = "{\"k\":\"";
  append_json_escaped(out, "v\"");
  EXPECT_EQ(out, "{\"k\":\"v\\\"");
}

}  // namespace
}  // namespace limpet
