// Body bytes in a message's framing for the wire: as they are for Content-Length and until-close
// bodies, as one chunk (size line, data, CRLF) for chunked ones, optionally after a head that has
// not been written yet, so that head and first bytes leave in one gathered write. No allocation:
// the pieces point at the caller's data and a small buffer for the size line. Any thread.
#pragma once

#include <array>
#include <cstddef>
#include <span>
#include <string_view>

#include "limpet/http/rewrite.hpp"

namespace limpet::http {

class FramedBody {
 public:
  // `head` may be empty; an empty chunk of a chunked body is written as nothing (the
  // terminating chunk is kLastChunk, written by whoever ends the message).
  FramedBody(BodyFraming framing, std::string_view data, std::string_view head = {});
  FramedBody(const FramedBody&) = delete;
  FramedBody& operator=(const FramedBody&) = delete;

  std::span<const std::string_view> parts() const { return {parts_.data(), count_}; }

 private:
  std::array<std::string_view, 4> parts_;
  size_t count_ = 0;
  char size_line_[20];
};

inline constexpr std::string_view kLastChunk = "0\r\n\r\n";

}  // namespace limpet::http
