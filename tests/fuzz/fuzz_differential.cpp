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

// Differences already reported and not yet fixed (tests/fuzz/README.md, "Known differences"):
// the comparison stops at such a request instead of failing, unless LIMPET_FUZZ_STRICT=1. Each
// entry goes once the parser or proxy is fixed; its input then moves to regressions/differential/.
const char* known_difference(const http::RequestHead& h, const ref::Request& r, bool limpet_refused) {
  if (strict()) return nullptr;
  // K1: llhttp accepts chunked framing on HTTP/1.0; RFC 9112 §6.1 calls that faulty framing.
  if (h.http_major == 1 && h.http_minor == 0 && h.chunked && r.verdict == ref::Verdict::kHardReject) {
    return "K1 http10-te";
  }
  // K2: HTTP/0.9-style request lines (no version, even ended by a bare LF) are accepted, read
  // with headers, and forwarded as HTTP/1.1.
  if (h.http_major == 0) return "K2 http09";
  // K4: what llhttp takes for an upgrade skips the body-framing checks and ends at its head:
  // CONNECT with Content-Length or Transfer-Encoding (the framing header is forwarded, the body
  // read as the next request), an Upgrade request with a Transfer-Encoding that is not chunked.
  if (h.method == "CONNECT" && (r.content_length || r.chunked || h.header("transfer-encoding") ||
                                h.header("content-length"))) {
    return "K4 upgrade-framing";
  }
  bool connection_upgrade = false;  // llhttp's reading: any Connection header naming upgrade
  for (const auto& f : h.headers) {
    if (http::iequals(f.name, "connection") && http::has_token(f.value, "upgrade")) connection_upgrade = true;
  }
  if (connection_upgrade && h.header("upgrade") && !h.chunked && h.header("transfer-encoding")) {
    return "K4 upgrade-framing";
  }
  // K6: Transfer-Encoding whose last coding is not chunked: llhttp refuses it only after
  // on_headers_complete, so the head has already gone to the exchange.
  if (limpet_refused && !h.chunked && h.header("transfer-encoding")) return "K6 te-after-head";
  // K9: "Transfer-Encoding: chunked" twice, an obs-fold line after the first (which resets
  // llhttp's Transfer-Encoding state), is read as chunked once; RFC 9112 §6.1 forbids chunked twice.
  if (h.chunked && r.verdict == ref::Verdict::kHardReject && r.why == "chunked applied twice") return "K9 chunked-twice";
  return nullptr;
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
    // Known differences K7 and K8 (README): llhttp takes a bare LF for a line end in some places
    // (after the request line, as the empty line ending the head or the trailers), and accepts a
    // field with an empty name. Where the RFC reading refuses for one of those, read again
    // tolerating it and compare with that; strict mode fails on them.
    ref::Tolerate tolerate;
    ref::Request r = ref::parse_request(input.substr(offset), tolerate);
    while (!strict() && r.verdict == ref::Verdict::kHardReject) {
      if (!tolerate.bare_lf && (r.why.find("bare LF") != std::string::npos ||
                                r.why.starts_with("stray CR or LF before the request line"))) {
        tolerate.bare_lf = true;
      } else if (!tolerate.empty_names && r.why.starts_with("field name \"\"")) {
        tolerate.empty_names = true;
      } else {
        break;
      }
      r = ref::parse_request(input.substr(offset), tolerate);
    }
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
    if (known_difference(h, r, limpet_refused) != nullptr) break;
    FUZZ_CHECK(r.verdict != ref::Verdict::kHardReject || (limpet_refused && r.in_body),
               "limpet forwards a request the RFC reading rejects:" + where());
    if (!r.soft_reason.empty()) break;  // only a stricter server would refuse it: not comparable
    FUZZ_CHECK(r.head_complete, "limpet forwards a head the reference has not finished reading:" + where());
    FUZZ_CHECK(r.method == h.method, "method read differently:" + where());
    FUZZ_CHECK(r.target == h.target, "target read differently:" + where());
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
