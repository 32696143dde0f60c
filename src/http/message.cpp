#include "limpet/http/message.hpp"

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
