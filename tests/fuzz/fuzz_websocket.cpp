// The WebSocket FrameTracker (http/websocket.hpp) that the tunnel runs in each direction.
// Input byte 0 picks the maximum message size (0 = unlimited, else a small limit), the rest is a
// byte stream of frames: masked client frames, unmasked server frames, fragments, control frames,
// 16- and 64-bit lengths, garbage. Checked, with the limit and without it:
//  - fed whole, the tracker agrees with a reference reading written here from RFC 6455 §5.2 and
//    the tracker's documented rules (control frames FIN and <= 125 bytes, continuation only inside
//    a fragmented message, no new data frame inside one, opcodes 3-7 and 0xB-0xF refused, a 64-bit
//    length with its top bit set refused, the limit over all
//    fragments): frames, messages, closes, the error, the last boundary, at_boundary();
//  - every split point (all of them for inputs up to 2 KB, 64 random ones beyond) and one byte per
//    feed give the same boundary, counters and error as feeding it whole;
//  - close_frame() builds one Close frame the tracker reads as such, with the code and the reason.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "limpet/http/websocket.hpp"

namespace limpet::fuzz {
namespace {

using http::websocket::FrameTracker;

struct Reading {
  uint64_t frames = 0;
  uint64_t messages = 0;
  uint64_t closes = 0;
  FrameTracker::Error error = FrameTracker::Error::kNone;
  size_t boundary = 0;  // end of the last complete frame, 0 if none
  bool at_boundary = true;

  std::string str() const {
    return "frames=" + std::to_string(frames) + " messages=" + std::to_string(messages) +
           " closes=" + std::to_string(closes) + " error=" + std::to_string(static_cast<int>(error)) +
           " boundary=" + std::to_string(boundary) + " at_boundary=" + std::to_string(at_boundary);
  }
  bool operator==(const Reading&) const = default;
};

Reading reference(std::string_view s, uint64_t max_message) {
  Reading r;
  size_t pos = 0;
  bool in_message = false;
  uint64_t message_size = 0;
  const auto byte = [&s](size_t i) { return static_cast<uint8_t>(s[i]); };
  while (pos < s.size()) {
    r.at_boundary = false;
    if (s.size() - pos < 2) return r;
    const bool fin = (byte(pos) & 0x80) != 0;
    const uint8_t opcode = byte(pos) & 0x0f;
    const bool masked = (byte(pos + 1) & 0x80) != 0;
    const uint8_t len7 = byte(pos + 1) & 0x7f;
    const size_t header = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + (masked ? 4 : 0);
    if (s.size() - pos < header) return r;
    uint64_t len = len7;
    if (len7 >= 126) {
      len = 0;
      for (size_t i = 0; i < (len7 == 126 ? 2u : 8u); ++i) len = (len << 8) | byte(pos + 2 + i);
    }
    if (len7 == 127 && (len >> 63) != 0) {  // RFC 6455 §5.2: the most significant bit MUST be 0
      r.error = FrameTracker::Error::kProtocol;
      return r;
    }
    const bool control = opcode >= 8;
    if (control) {
      if (!fin || len > 125 || opcode > 0xA) {  // 0xB-0xF are reserved control opcodes
        r.error = FrameTracker::Error::kProtocol;
        return r;
      }
    } else {
      if (opcode == 0) {
        if (!in_message) {
          r.error = FrameTracker::Error::kProtocol;
          return r;
        }
      } else if (opcode == 1 || opcode == 2) {
        if (in_message) {
          r.error = FrameTracker::Error::kProtocol;
          return r;
        }
        in_message = true;
        message_size = 0;
      } else {
        r.error = FrameTracker::Error::kProtocol;
        return r;
      }
      message_size += len;
      if (max_message > 0 && message_size > max_message) {
        r.error = FrameTracker::Error::kTooBig;
        return r;
      }
    }
    if (opcode == 8) ++r.closes;
    pos += header;
    if (s.size() - pos < len) return r;  // payload still coming
    pos += static_cast<size_t>(len);
    ++r.frames;
    if (!control && fin) {
      ++r.messages;
      in_message = false;
    }
    r.boundary = pos;
    r.at_boundary = true;
  }
  return r;
}

Reading read(FrameTracker& t, size_t boundary) {
  Reading r;
  r.frames = t.frames();
  r.messages = t.messages();
  r.closes = t.closes();
  r.error = t.error();
  r.boundary = boundary;
  r.at_boundary = t.at_boundary();
  return r;
}

Reading feed_split(std::string_view s, size_t at, uint64_t max_message) {
  FrameTracker t(max_message);
  const size_t a = t.feed(s.substr(0, at));
  const size_t b = t.feed(s.substr(at));
  return read(t, b > 0 ? at + b : a);
}

void check_stream(std::string_view s, uint64_t max_message, uint64_t salt) {
  const Reading ref = reference(s, max_message);
  FrameTracker whole_tracker(max_message);
  const Reading whole = read(whole_tracker, whole_tracker.feed(s));
  const auto where = [&]() -> std::string {
    return " (max " + std::to_string(max_message) + ") for \"" + escape(s) + "\"";
  };
  FUZZ_CHECK(whole == ref, "tracker " + whole.str() + " but reference " + ref.str() + where());

  if (s.size() <= 2048) {
    for (size_t at = 0; at <= s.size(); ++at) {
      const Reading r = feed_split(s, at, max_message);
      FUZZ_CHECK(r == whole, "split at " + std::to_string(at) + ": " + r.str() + " vs whole " + whole.str() + where());
    }
  } else {
    Rng rng(s);
    for (uint64_t i = 0; i < salt; ++i) rng.next();
    for (int i = 0; i < 64; ++i) {
      const size_t at = rng.below(s.size() + 1);
      const Reading r = feed_split(s, at, max_message);
      FUZZ_CHECK(r == whole, "split at " + std::to_string(at) + ": " + r.str() + " vs whole " + whole.str() + where());
    }
  }
  FrameTracker bytes(max_message);
  size_t boundary = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const size_t b = bytes.feed(s.substr(i, 1));
    FUZZ_CHECK(b <= 1, "feed of one byte returned " + std::to_string(b));
    if (b == 1) boundary = i + 1;
  }
  const Reading r = read(bytes, boundary);
  FUZZ_CHECK(r == whole, "byte by byte: " + r.str() + " vs whole " + whole.str() + where());
}

void check_close_frame(std::string_view s) {
  if (s.size() < 7) return;
  const auto u8 = [&s](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint16_t code = static_cast<uint16_t>((u8(0) << 8) | u8(1));
  const bool masked = (u8(2) & 1) != 0;
  const uint32_t key = (uint32_t{u8(3)} << 24) | (uint32_t{u8(4)} << 16) | (uint32_t{u8(5)} << 8) | u8(6);
  const std::string_view reason = s.substr(7);
  const std::string frame = http::websocket::close_frame(code, reason, masked, key);
  FrameTracker t;
  const size_t b = t.feed(frame);
  const auto where = [&]() -> std::string {
    return " for close_frame(" + std::to_string(code) + ", \"" + escape(reason) + "\")";
  };
  FUZZ_CHECK(t.error() == FrameTracker::Error::kNone, "tracker refused a Close frame" + where());
  FUZZ_CHECK(b == frame.size() && t.frames() == 1 && t.closes() == 1 && t.messages() == 0,
             "not exactly one Close frame" + where());
  const auto f = [&frame](size_t i) { return static_cast<uint8_t>(frame[i]); };
  FUZZ_CHECK(f(0) == 0x88, "first byte is not FIN|Close" + where());
  FUZZ_CHECK(((f(1) & 0x80) != 0) == masked, "mask bit wrong" + where());
  const size_t len = f(1) & 0x7f;
  const size_t start = masked ? 6 : 2;
  FUZZ_CHECK(len <= 125 && frame.size() == start + len, "length wrong" + where());
  std::string payload = frame.substr(start);
  for (size_t i = 0; i < payload.size() && masked; ++i) payload[i] = static_cast<char>(payload[i] ^ frame[2 + i % 4]);
  FUZZ_CHECK(payload.size() >= 2 && static_cast<uint8_t>(payload[0]) == (code >> 8) &&
                 static_cast<uint8_t>(payload[1]) == (code & 0xff),
             "code wrong" + where());
  FUZZ_CHECK(payload.substr(2) == reason.substr(0, 123), "reason wrong" + where());
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet::fuzz;
  if (size == 0) return 0;
  const uint64_t limits[] = {0, 1, 16, 125, 126, 1000, 65535, 65536};
  const uint64_t max_message = limits[data[0] & 7] + (data[0] >> 3);
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  check_stream(stream, max_message, 1);
  check_stream(stream, 0, 2);
  check_close_frame(stream);
  return 0;
}
