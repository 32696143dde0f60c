#include "limpet/http/request_checks.hpp"

namespace limpet::http {
namespace {

// RFC 9112 §6.1, §6.3 for the one Transfer-Encoding header a request may carry. limpet decodes
// chunked and nothing else, and forwards the body re-chunked under "Transfer-Encoding: chunked"
// alone: any other coding would reach the backend without its name, so it is not implemented.
std::optional<Refusal> refuse_transfer_coding(std::string_view value, bool llhttp_chunked) {
  int chunked = 0;
  int others = 0;
  bool last_is_chunked = false;
  while (true) {
    const size_t comma = value.find(',');
    const std::string_view coding = trim(value.substr(0, comma));
    // An empty element (",chunked", "chunked,") is legal list syntax that parsers read in
    // different ways (llhttp: not chunked): a framing header must read one way only.
    if (coding.empty()) return Refusal{400, "empty element in Transfer-Encoding"};
    last_is_chunked = iequals(coding, "chunked");
    (last_is_chunked ? chunked : others) += 1;
    if (comma == std::string_view::npos) break;
    value.remove_prefix(comma + 1);
  }
  if (!last_is_chunked) return Refusal{400, "Transfer-Encoding does not end in chunked"};
  if (chunked > 1) return Refusal{400, "chunked applied twice"};
  if (others > 0) return Refusal{501, "transfer coding other than chunked"};
  // One "chunked" that llhttp did not read as chunked: the two readings differ, take neither.
  if (!llhttp_chunked) return Refusal{400, "Transfer-Encoding read differently"};
  return std::nullopt;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

}  // namespace

std::optional<Refusal> refuse_request_head(const RequestHead& head) {
  if (head.http_major == 0) return Refusal{400, "HTTP/0.9 request line (no version)"};
  if (head.http_major != 1) return Refusal{505, "not HTTP/1.x"};
  // CONNECT asks for a tunnel to the target; llhttp also ends it at its head, so a body framing
  // header on it would have the body bytes read as the next request.
  if (head.method == "CONNECT") return Refusal{501, "CONNECT (limpet is no forward proxy)"};
  if (head.target == "*" && head.method != "OPTIONS") return Refusal{400, "asterisk-form target outside OPTIONS"};
  int transfer_encodings = 0;
  std::string_view transfer_encoding;
  for (const auto& h : head.headers) {
    if (h.name.empty()) return Refusal{400, "header field with an empty name"};
    if (iequals(h.name, "transfer-encoding")) {
      ++transfer_encodings;
      transfer_encoding = h.value;
    }
  }
  if (transfer_encodings == 0) return std::nullopt;
  // §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing, whatever else the head says.
  if (head.http_minor == 0) return Refusal{400, "Transfer-Encoding on HTTP/1.0"};
  // Parsers disagree on how two headers combine (llhttp forgets the first after an obs-fold).
  if (transfer_encodings > 1) return Refusal{400, "Transfer-Encoding twice"};
  return refuse_transfer_coding(transfer_encoding, head.chunked);
}

std::optional<AbsoluteForm> parse_absolute_form(std::string_view target, std::optional<Refusal>* refusal) {
  if (target.starts_with('/') || target == "*") return std::nullopt;
  size_t scheme_end = 0;
  if (starts_with_ci(target, "http://")) {
    scheme_end = 7;
  } else if (starts_with_ci(target, "https://")) {
    scheme_end = 8;
  } else {
    *refusal = Refusal{400, "request target is neither origin-form nor an http(s) absolute-form"};
    return std::nullopt;
  }
  const std::string_view rest = target.substr(scheme_end);
  const size_t authority_end = rest.find_first_of("/?#");
  AbsoluteForm form{rest.substr(0, authority_end), std::string_view()};
  if (authority_end != std::string_view::npos) form.path = rest.substr(authority_end);
  // RFC 9110 §4.2.4: userinfo in an http(s) URI is to be treated as an error.
  if (form.authority.empty() || form.authority.find('@') != std::string_view::npos) {
    *refusal = Refusal{400, "absolute-form target without a host, or with userinfo"};
    return std::nullopt;
  }
  if (form.path.starts_with('#')) form.path = std::string_view();  // a fragment is not sent on
  return form;
}

}  // namespace limpet::http
