#include "limpet/store/resp.hpp"

#include <gtest/gtest.h>

#include <array>

namespace limpet::store {
namespace {

TEST(Resp, FormatsCommandsAsBulkStringArrays) {
  std::string out;
  std::array<std::string_view, 3> argv{"SET", "k", std::string_view("a\r\nb", 4)};
  append_command(out, argv);
  EXPECT_EQ(out, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n");
}

std::vector<Reply> read_all(std::string_view wire, size_t step) {
  ReplyReader reader;
  std::vector<Reply> out;
  for (size_t i = 0; i < wire.size(); i += step) {
    reader.feed(wire.substr(i, step));
    Reply r;
    while (reader.next(r)) out.push_back(std::move(r));
  }
  EXPECT_FALSE(reader.error()) << reader.error_reason();
  return out;
}

TEST(Resp, ReadsEveryReplyTypeAtEverySplit) {
  const std::string wire =
      "+OK\r\n-ERR wrong\r\n:42\r\n$5\r\nhel\nl\r\n$-1\r\n*-1\r\n*3\r\n$1\r\na\r\n*1\r\n:7\r\n$-1\r\n";
  for (size_t step = 1; step <= wire.size(); ++step) {
    auto replies = read_all(wire, step);
    ASSERT_EQ(replies.size(), 7u) << "step " << step;
    EXPECT_EQ(replies[0].type, Reply::Type::kStatus);
    EXPECT_EQ(replies[0].str, "OK");
    EXPECT_EQ(replies[1].type, Reply::Type::kError);
    EXPECT_EQ(replies[1].str, "ERR wrong");
    EXPECT_EQ(replies[2].integer, 42);
    EXPECT_EQ(replies[3].str, "hel\nl");
    EXPECT_EQ(replies[4].type, Reply::Type::kNil);
    EXPECT_EQ(replies[5].type, Reply::Type::kNil);
    ASSERT_EQ(replies[6].type, Reply::Type::kArray);
    ASSERT_EQ(replies[6].elements.size(), 3u);
    EXPECT_EQ(replies[6].elements[0].str, "a");
    ASSERT_EQ(replies[6].elements[1].elements.size(), 1u);
    EXPECT_EQ(replies[6].elements[1].elements[0].integer, 7);
    EXPECT_EQ(replies[6].elements[2].type, Reply::Type::kNil);
  }
}

TEST(Resp, RefusesWhatCannotBeTrusted) {
  // hiredis skips the two bytes after a bulk string unchecked: the bad framing shows in the
  // reply after it, and from then on the connection is given up.
  for (std::string_view bad : {"?what\r\n", "*99999999\r\n", "*-7\r\n", "$3\r\nabcde\r\n"}) {
    ReplyReader reader;
    reader.feed(bad);
    Reply r;
    int replies = 0;
    while (reader.next(r)) ++replies;
    EXPECT_LE(replies, 1) << bad;
    EXPECT_TRUE(reader.error()) << bad;
    EXPECT_FALSE(reader.next(r)) << bad;
  }
  ReplyReader huge;  // a bulk string that never ends is not buffered without bound
  huge.feed("$999999999\r\n");
  std::string chunk(64 * 1024, 'x');
  Reply none;
  for (int i = 0; i < 20 && !huge.error(); ++i) {
    huge.feed(chunk);
    EXPECT_FALSE(huge.next(none));
  }
  EXPECT_TRUE(huge.error());
}

}  // namespace
}  // namespace limpet::store
