#include "limpet/http/framing.hpp"

#include <charconv>

namespace limpet::http {

FramedBody::FramedBody(BodyFraming framing, std::string_view data, std::string_view head) {
  if (!head.empty()) parts_[count_++] = head;
  if (framing != BodyFraming::kChunked) {
    if (!data.empty()) parts_[count_++] = data;
    return;
  }
  if (data.empty()) return;
  auto [end, ec] = std::to_chars(size_line_, size_line_ + sizeof size_line_ - 2, data.size(), 16);
  (void)ec;  // 16 hex digits always fit
  *end++ = '\r';
  *end++ = '\n';
  parts_[count_++] = std::string_view(size_line_, static_cast<size_t>(end - size_line_));
  parts_[count_++] = data;
  parts_[count_++] = "\r\n";
}

}  // namespace limpet::http
