// WebSocket (RFC 6455) frame boundaries in a byte stream, without buffering payloads: the tunnel
// feeds every chunk through a FrameTracker per direction to count messages, enforce a maximum
// message size and know where a Close frame may be injected. Also builds Close frames.
// Owning worker only (pure, no I/O).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace limpet::http::websocket {

enum Opcode : uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

class FrameTracker {
 public:
  enum class Error : uint8_t { kNone, kProtocol, kTooBig };
  // RFC 6455 §5.1: every frame from a client is masked, none from a server.
  enum class Masking : uint8_t { kAny, kRequired, kForbidden };

  // Protocol errors: a continuation outside a message or a new message inside one, reserved
  // opcodes (data 3-7, control 0xB-0xF), a fragmented or over-125-byte control frame, a 64-bit
  // length with its top bit set, and the wrong masking for the direction. RSV bits are left to
  // the endpoints (extensions such as permessage-deflate use them).
  explicit FrameTracker(uint64_t max_message = 0, Masking masking = Masking::kAny)
      : max_message_(max_message), masking_(masking) {}

  // Consumes `data`; returns how many of its leading bytes end exactly at the last frame
  // boundary reached inside it (0 if none). Stops at the first error.
  size_t feed(std::string_view data);

  bool at_boundary() const { return header_len_ == 0 && payload_left_ == 0; }
  uint64_t messages() const { return messages_; }  // complete data messages (text/binary)
  uint32_t frames() const { return frames_; }
  uint32_t closes() const { return closes_; }  // Close frames seen so far
  // The status code of the first Close frame: kNoStatus when it had none, 0 before its first
  // two payload bytes were read.
  uint16_t first_close_code() const { return first_close_code_; }
  static constexpr uint16_t kNoStatus = 1005;  // RFC 6455 §7.1.5
  Error error() const { return error_; }

 private:
  bool parse_header();  // false while the header is incomplete
  // Payload bytes of the first Close frame: its first two are the code. The masking key is
  // still in header_ (the next header overwrites it only after this payload).
  void read_close_code(const char* data, uint64_t n);

  // Counters first, bytes last: two of these live in every tunnel.
  uint64_t max_message_;
  uint64_t payload_left_ = 0;
  uint64_t message_size_ = 0;
  uint64_t messages_ = 0;
  uint32_t frames_ = 0;  // wraps after 2^32 frames: a count for tests and logs, not a decision
  uint32_t closes_ = 0;
  Error error_ = Error::kNone;
  uint8_t header_[14]{};
  uint8_t header_len_ = 0;   // at most 14
  bool in_message_ = false;  // a fragmented data message has started
  bool frame_fin_ = false;
  uint8_t frame_opcode_ = 0;
  Masking masking_;
  uint8_t close_code_read_ = 0;  // bytes of the first Close frame's code read (0..2)
  uint8_t close_code_high_ = 0;  // its first byte, until the second arrives
  uint16_t first_close_code_ = 0;
};

// A Close frame with `code` and `reason` (<= 123 bytes). Frames toward a server must be masked
// (RFC 6455 §5.3); `mask_key` is then used as the masking key.
std::string close_frame(uint16_t code, std::string_view reason, bool masked, uint32_t mask_key);

// A Sec-WebSocket-Key (RFC 6455 §4.1): the base64 of 16 random bytes, given as two words. For
// an upgrade limpet makes itself (RFC 8441: an HTTP/2 client sends none).
std::string handshake_key(uint64_t high, uint64_t low);

}  // namespace limpet::http::websocket
