// Differential: the same client bytes to limpet's strict request parser (driven as
// proxy/http_session.cpp drives it) and to reference_http.hpp, an independent RFC 9112 reading.
// For every request limpet forwards (its head complete and a valid Host: the proxy sends the head
// on at once and streams the body), fails when the reference
//  - rejects it hard (its framing or boundary is in doubt: see reference_http.hpp), or
//  - reads a different method, target, version, framing (chunked or Content-Length and its
//    value), body, or end of message — so the next pipelined request would start elsewhere;
//  - or has the request complete where() limpet still waits for bytes, or the reverse.
// Where only the reference is stricter in a way that does not change the reading (soft), the
// comparison stops there. Where limpet refuses and the reference accepts, limpet is the stricter
// one: nothing to check.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_http.hpp"
#include "reference_http.hpp"

namespace limpet::fuzz {
namespace {

// RFC 9112 §3.2.2 as limpet applies it (doc/security.md): an http(s) absolute-form target goes on
// in origin-form, its fragment dropped when nothing but a fragment follows the authority.
std::string origin_form(const std::string& target) {
  for (std::string_view scheme : {"http://", "https://"}) {
    if (target.size() < scheme.size() || !http::iequals(std::string_view(target).substr(0, scheme.size()), scheme)) {
      continue;
    }
    const size_t path = target.find_first_of("/?#", scheme.size());
    if (path == std::string::npos || target[path] == '#') return "/";
    return target[path] == '?' ? "/" + target.substr(path) : target.substr(path);
  }
  return target;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet;
  using namespace limpet::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const StreamResult limpet = drive(http::Parser::Kind::kRequest, input, {});

  size_t offset = 0;
  for (const ParsedMessage& m : limpet.messages) {
    const http::RequestHead& h = *m.request;
    if (!has_valid_host(h)) break;  // answered 400, connection closed: nothing forwarded
    const ref::Request r = ref::parse_request(input.substr(offset));
    const auto where = [&]() -> std::string { return "\n    request at " + std::to_string(offset) + " of \"" + escape(input) +
                              "\"\n    limpet: " + std::string(h.method) + " " + escape(h.target) +
                              (h.chunked ? " chunked" : "") +
                              (h.content_length ? " cl=" + std::to_string(*h.content_length) : "") + " body " +
                              std::to_string(m.body.size()) + (m.complete ? " ends at " + std::to_string(m.end) : " (incomplete)") +
                              "\n    reference: " + ref::name(r.verdict) + " " + r.why + " " + r.method + " " +
                              escape(r.target) + (r.chunked ? " chunked" : "") +
                              (r.content_length ? " cl=" + std::to_string(*r.content_length) : "") + " body " +
                              std::to_string(r.body.size()) +
                              (r.verdict == ref::Verdict::kOk ? " ends at " + std::to_string(offset + r.end) : "") +
                              (r.soft_reason.empty() ? "" : " (soft: " + r.soft_reason + ")"); };

    // limpet refused this request's body (400 after the head went on; the backend connection is
    // dropped): only the head had to agree, and the reference may refuse the body too.
    const bool limpet_refused = !m.complete && limpet.error_status != 0 && &m == &limpet.messages.back();
    FUZZ_CHECK(r.verdict != ref::Verdict::kHardReject || (limpet_refused && r.in_body),
               "limpet forwards a request the RFC reading rejects:" + where());
    if (!r.soft_reason.empty()) break;  // only a stricter server would refuse it: not comparable
    FUZZ_CHECK(r.head_complete, "limpet forwards a head the reference has not finished reading:" + where());
    FUZZ_CHECK(r.method == h.method, "method read differently:" + where());
    FUZZ_CHECK(origin_form(r.target) == h.target, "target read differently:" + where());
    FUZZ_CHECK(r.major == h.http_major && r.minor == h.http_minor, "version read differently:" + where());
    FUZZ_CHECK(r.chunked == h.chunked, "chunked framing read differently:" + where());
    FUZZ_CHECK(r.content_length == h.content_length, "Content-Length read differently:" + where());
    if (m.complete) {
      FUZZ_CHECK(r.verdict == ref::Verdict::kOk, "limpet ended a request the reference still reads:" + where());
      FUZZ_CHECK(r.body == m.body, "body read differently:" + where());
      FUZZ_CHECK(offset + r.end == m.end, "the request ends elsewhere (the next one would be smuggled):" + where());
    } else if (!limpet_refused) {
      FUZZ_CHECK(r.verdict == ref::Verdict::kIncomplete, "the reference ended a request limpet still reads:" + where());
      FUZZ_CHECK(r.body == m.body, "body so far read differently:" + where());
    }
    offset = m.end;
    if (!m.complete) break;
  }
  return 0;
}
