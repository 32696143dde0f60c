#include "limpet/http/message.hpp"

#include <charconv>

namespace limpet::http {
namespace {

// A head that once held a huge message gives its buffer back rather than keep it for the
// connection's lifetime.
constexpr size_t kKeepStorage = 4 * 1024;

}  // namespace

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

std::optional<uint64_t> keep_alive_timeout_s(std::string_view value) {
  while (!value.empty()) {
    const size_t comma = value.find(',');
    std::string_view param = trim(value.substr(0, comma));
    const size_t eq = param.find('=');
    if (eq != std::string_view::npos && iequals(trim(param.substr(0, eq)), "timeout")) {
      std::string_view number = trim(param.substr(eq + 1));
      uint64_t seconds = 0;
      auto [end, ec] = std::from_chars(number.data(), number.data() + number.size(), seconds);
      if (ec != std::errc() || end != number.data() + number.size()) return std::nullopt;
      return seconds;
    }
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  return std::nullopt;
}

std::optional<std::string_view> HeadBase::header(std::string_view name) const {
  for (const auto& h : headers) {
    if (iequals(h.name, name)) return h.value;
  }
  return std::nullopt;
}

void HeadBase::clear() {
  if (storage.capacity() > kKeepStorage) {
    std::string().swap(storage);
  } else {
    storage.clear();
  }
  headers.clear();
  http_major = 1;
  http_minor = 1;
  keep_alive = true;
  chunked = false;
  content_length.reset();
}

void RequestHead::clear() {
  HeadBase::clear();
  method = target = path = query = {};
  upgrade = false;
  websocket = false;
}

void ResponseHead::clear() {
  HeadBase::clear();
  status = 0;
  reason = {};
}

}  // namespace limpet::http
