#include "limpet/http/websocket.hpp"

#include <algorithm>

namespace limpet::http::websocket {
namespace {

constexpr uint8_t kFin = 0x80;
constexpr uint8_t kMaskBit = 0x80;

bool is_control(uint8_t opcode) { return (opcode & 0x8) != 0; }

// Bytes needed for a complete header, given what we have so far.
size_t header_size(const uint8_t* h, size_t have) {
  if (have < 2) return 2;
  size_t size = 2;
  uint8_t len7 = h[1] & 0x7F;
  if (len7 == 126) size += 2;
  if (len7 == 127) size += 8;
  if (h[1] & kMaskBit) size += 4;
  return size;
}

}  // namespace

bool FrameTracker::parse_header() {
  const uint8_t* h = header_;
  frame_fin_ = (h[0] & kFin) != 0;
  frame_opcode_ = h[0] & 0x0F;
  uint8_t len7 = h[1] & 0x7F;
  const bool masked = (h[1] & kMaskBit) != 0;
  if ((masking_ == Masking::kRequired && !masked) || (masking_ == Masking::kForbidden && masked) ||
      (len7 == 127 && (h[2] & 0x80) != 0)) {
    error_ = Error::kProtocol;
    return false;
  }
  uint64_t len = len7;
  if (len7 == 126) {
    len = (uint64_t{h[2]} << 8) | h[3];
  } else if (len7 == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | h[2 + i];
  }
  bool control = is_control(frame_opcode_);
  if (control && (!frame_fin_ || len > 125 || frame_opcode_ > kPong)) {
    error_ = Error::kProtocol;
    return false;
  }
  if (!control) {
    if (frame_opcode_ == kContinuation) {
      if (!in_message_) {
        error_ = Error::kProtocol;
        return false;
      }
    } else if (frame_opcode_ == kText || frame_opcode_ == kBinary) {
      if (in_message_) {
        error_ = Error::kProtocol;
        return false;
      }
      in_message_ = true;
      message_size_ = 0;
    } else {
      error_ = Error::kProtocol;  // reserved opcodes 3-7
      return false;
    }
    message_size_ += len;
    if (max_message_ > 0 && message_size_ > max_message_) {
      error_ = Error::kTooBig;
      return false;
    }
  }
  if (frame_opcode_ == kClose && ++closes_ == 1 && len < 2) first_close_code_ = kNoStatus;
  payload_left_ = len;
  header_len_ = 0;
  return true;
}

void FrameTracker::read_close_code(const char* data, uint64_t n) {
  const bool masked = (header_[1] & kMaskBit) != 0;
  const uint8_t* key = header_ + header_size(header_, 2) - 4;
  for (uint64_t i = 0; i < n && close_code_read_ < 2; ++i, ++close_code_read_) {
    uint8_t b = static_cast<uint8_t>(data[i]);
    if (masked) b ^= key[close_code_read_];
    if (close_code_read_ == 0) {
      close_code_high_ = b;
    } else {
      first_close_code_ = static_cast<uint16_t>((close_code_high_ << 8) | b);
    }
  }
}

size_t FrameTracker::feed(std::string_view data) {
  size_t pos = 0;
  size_t last_boundary = 0;
  while (pos < data.size() && error_ == Error::kNone) {
    if (payload_left_ == 0) {
      // Collect the header byte by byte (headers are 2-14 bytes, often split across reads).
      header_[header_len_++] = static_cast<uint8_t>(data[pos++]);
      if (header_len_ < header_size(header_, header_len_)) continue;
      if (!parse_header()) break;
    } else {
      uint64_t take = std::min<uint64_t>(payload_left_, data.size() - pos);
      if (first_close_code_ == 0 && closes_ == 1 && frame_opcode_ == kClose) read_close_code(data.data() + pos, take);
      pos += take;
      payload_left_ -= take;
    }
    if (payload_left_ == 0 && header_len_ == 0) {
      ++frames_;
      if (!is_control(frame_opcode_) && frame_fin_) {
        ++messages_;
        in_message_ = false;
      }
      last_boundary = pos;
    }
  }
  return last_boundary;
}

std::string handshake_key(uint64_t high, uint64_t low) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  uint8_t bytes[18] = {};  // 16, padded to a multiple of 3
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<uint8_t>(high >> (56 - 8 * i));
    bytes[8 + i] = static_cast<uint8_t>(low >> (56 - 8 * i));
  }
  std::string out;
  out.reserve(24);
  for (int i = 0; i < 18; i += 3) {
    const uint32_t group = (uint32_t{bytes[i]} << 16) | (uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    for (int shift = 18; shift >= 0; shift -= 6) out.push_back(kAlphabet[(group >> shift) & 0x3F]);
  }
  out.replace(22, 2, "==");  // the last group held one byte of the 16
  return out;
}

std::string close_frame(uint16_t code, std::string_view reason, bool masked, uint32_t mask_key) {
  reason = reason.substr(0, 123);
  std::string payload;
  payload.push_back(static_cast<char>(code >> 8));
  payload.push_back(static_cast<char>(code & 0xFF));
  payload.append(reason);
  std::string frame;
  frame.push_back(static_cast<char>(kFin | kClose));
  frame.push_back(static_cast<char>((masked ? kMaskBit : 0) | payload.size()));
  if (masked) {
    uint8_t key[4] = {static_cast<uint8_t>(mask_key >> 24), static_cast<uint8_t>(mask_key >> 16),
                      static_cast<uint8_t>(mask_key >> 8), static_cast<uint8_t>(mask_key)};
    frame.append(reinterpret_cast<const char*>(key), 4);
    for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(payload[i] ^ key[i % 4]);
  }
  frame += payload;
  return frame;
}

}  // namespace limpet::http::websocket
