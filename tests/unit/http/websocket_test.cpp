#include "limpet/http/websocket.hpp"

#include <gtest/gtest.h>

#include <string>

namespace limpet::http::websocket {
namespace {

// An independent frame encoder for the tests (not limpet's): header per RFC 6455 §5.2.
std::string frame(uint8_t opcode, size_t len, bool fin = true, bool masked = false) {
  std::string f;
  f.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  uint8_t mask = masked ? 0x80 : 0;
  if (len < 126) {
    f.push_back(static_cast<char>(mask | len));
  } else if (len <= 0xFFFF) {
    f.push_back(static_cast<char>(mask | 126));
    f.push_back(static_cast<char>(len >> 8));
    f.push_back(static_cast<char>(len & 0xFF));
  } else {
    f.push_back(static_cast<char>(mask | 127));
    for (int i = 7; i >= 0; --i) f.push_back(static_cast<char>((uint64_t{len} >> (8 * i)) & 0xFF));
  }
  if (masked) f += std::string("\x11\x22\x33\x44", 4);
  f += std::string(len, 'p');
  return f;
}

TEST(FrameTracker, CountsMessagesAcrossArbitrarySplits) {
  std::string stream = frame(kText, 5) + frame(kBinary, 300, true, true) + frame(kPing, 0) +
                       frame(kText, 70000) + frame(kBinary, 1);
  for (size_t step : {1u, 2u, 3u, 7u, 64u, 1000u, 100000u}) {
    FrameTracker t;
    for (size_t i = 0; i < stream.size(); i += step) t.feed(std::string_view(stream).substr(i, step));
    EXPECT_EQ(t.messages(), 4u) << "step " << step;
    EXPECT_EQ(t.frames(), 5u);
    EXPECT_TRUE(t.at_boundary());
    EXPECT_EQ(t.error(), FrameTracker::Error::kNone);
  }
}

TEST(FrameTracker, ReportsLastBoundaryInsideAChunk) {
  std::string a = frame(kText, 10);
  std::string b = frame(kText, 10);
  FrameTracker t;
  std::string chunk = a + b.substr(0, 4);
  EXPECT_EQ(t.feed(chunk), a.size());
  EXPECT_FALSE(t.at_boundary());
  EXPECT_EQ(t.feed(b.substr(4)), b.size() - 4);
  EXPECT_TRUE(t.at_boundary());
}

TEST(FrameTracker, FragmentedMessageWithInterleavedControlFrame) {
  std::string s = frame(kText, 3, false) + frame(kPing, 2) + frame(kContinuation, 3, false) +
                  frame(kContinuation, 3, true);
  FrameTracker t;
  t.feed(s);
  EXPECT_EQ(t.messages(), 1u);
  EXPECT_EQ(t.frames(), 4u);
}

TEST(FrameTracker, MaxMessageSizeCoversFragments) {
  FrameTracker t(8);
  t.feed(frame(kBinary, 5, false) + frame(kContinuation, 5, true));
  EXPECT_EQ(t.error(), FrameTracker::Error::kTooBig);
}

TEST(FrameTracker, ProtocolErrors) {
  FrameTracker orphan;
  orphan.feed(frame(kContinuation, 1));
  EXPECT_EQ(orphan.error(), FrameTracker::Error::kProtocol);
  FrameTracker big_control;
  big_control.feed(frame(kPing, 200));
  EXPECT_EQ(big_control.error(), FrameTracker::Error::kProtocol);
  FrameTracker reserved;
  reserved.feed(frame(0x3, 1));
  EXPECT_EQ(reserved.error(), FrameTracker::Error::kProtocol);
}

TEST(FrameTracker, MoreProtocolErrors) {
  FrameTracker reserved_control;
  reserved_control.feed(frame(0xB, 1));
  EXPECT_EQ(reserved_control.error(), FrameTracker::Error::kProtocol);
  FrameTracker fragmented_ping;
  fragmented_ping.feed(frame(kPing, 1, false));
  EXPECT_EQ(fragmented_ping.error(), FrameTracker::Error::kProtocol);
  FrameTracker top_bit;  // a 64-bit length with its most significant bit set
  top_bit.feed(std::string("\x82\x7f\x80\x00\x00\x00\x00\x00\x00\x01", 10));
  EXPECT_EQ(top_bit.error(), FrameTracker::Error::kProtocol);
  FrameTracker from_client(0, FrameTracker::Masking::kRequired);
  from_client.feed(frame(kText, 3, true, true));
  EXPECT_EQ(from_client.error(), FrameTracker::Error::kNone);
  from_client.feed(frame(kText, 3, true, false));
  EXPECT_EQ(from_client.error(), FrameTracker::Error::kProtocol);
  FrameTracker from_server(0, FrameTracker::Masking::kForbidden);
  from_server.feed(frame(kText, 3, true, true));
  EXPECT_EQ(from_server.error(), FrameTracker::Error::kProtocol);
  FrameTracker rsv(0, FrameTracker::Masking::kForbidden);  // extensions' bits are the endpoints' business
  rsv.feed(std::string("\xc1\x01x", 3));
  EXPECT_EQ(rsv.error(), FrameTracker::Error::kNone);
  EXPECT_EQ(rsv.messages(), 1u);
}

TEST(CloseFrame, UnmaskedAndMasked) {
  std::string plain = close_frame(1012, "restart", false, 0);
  EXPECT_EQ(plain, std::string("\x88\x09\x03\xf4restart", 11));
  std::string masked = close_frame(1001, "", true, 0x01020304);
  ASSERT_EQ(masked.size(), 2u + 4u + 2u);
  EXPECT_EQ(static_cast<uint8_t>(masked[1]), 0x82);
  // 1001 = 0x03E9, XOR with key bytes 01 02.
  EXPECT_EQ(static_cast<uint8_t>(masked[6]), 0x03 ^ 0x01);
  EXPECT_EQ(static_cast<uint8_t>(masked[7]), 0xE9 ^ 0x02);
  FrameTracker t;
  t.feed(masked);
  EXPECT_EQ(t.closes(), 1u);
  EXPECT_TRUE(t.at_boundary());
}

// A Close frame built by hand: code 4001 (0x0FA1), reason "bye", masked with 11 22 33 44.
std::string masked_close_4001() {
  const uint8_t key[4] = {0x11, 0x22, 0x33, 0x44};
  const uint8_t payload[5] = {0x0F, 0xA1, 'b', 'y', 'e'};
  std::string f = "\x88\x85";
  f.append(reinterpret_cast<const char*>(key), 4);
  for (int i = 0; i < 5; ++i) f.push_back(static_cast<char>(payload[i] ^ key[i % 4]));
  return f;
}

TEST(FrameTracker, FirstCloseCodeIsUnmaskedAndSurvivesSplits) {
  const std::string close = masked_close_4001();
  for (size_t split = 0; split <= close.size(); ++split) {
    FrameTracker t(0, FrameTracker::Masking::kRequired);
    EXPECT_EQ(t.first_close_code(), 0);
    t.feed(close.substr(0, split));
    t.feed(close.substr(split));
    EXPECT_EQ(t.first_close_code(), 4001) << "split at " << split;
  }
  FrameTracker bytewise(0, FrameTracker::Masking::kRequired);
  for (char c : close + close) bytewise.feed(std::string_view(&c, 1));
  EXPECT_EQ(bytewise.closes(), 2u);
  EXPECT_EQ(bytewise.first_close_code(), 4001);
}

TEST(FrameTracker, CloseCodeAfterDataAndWithoutAStatus) {
  FrameTracker server(0, FrameTracker::Masking::kForbidden);
  server.feed(frame(kText, 300) + std::string("\x88\x02\x03\xe8", 4) + frame(kClose, 0));
  EXPECT_EQ(server.first_close_code(), 1000);
  FrameTracker empty;
  empty.feed(frame(kClose, 0));
  EXPECT_EQ(empty.first_close_code(), FrameTracker::kNoStatus);
  FrameTracker none;
  none.feed(frame(kPing, 2) + frame(kText, 2));
  EXPECT_EQ(none.first_close_code(), 0);
}

}  // namespace
}  // namespace limpet::http::websocket

TEST(HandshakeKey, IsTheBase64OfItsSixteenBytes) {
  auto word = [](std::string_view eight) {
    uint64_t w = 0;
    for (char c : eight) w = (w << 8) | static_cast<uint8_t>(c);
    return w;
  };
  // RFC 6455 §1.3's example key is the base64 of "the sample nonce".
  EXPECT_EQ(limpet::http::websocket::handshake_key(word("the samp"), word("le nonce")), "dGhlIHNhbXBsZSBub25jZQ==");
  EXPECT_EQ(limpet::http::websocket::handshake_key(0, 0), "AAAAAAAAAAAAAAAAAAAAAA==");
}
