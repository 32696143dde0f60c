// A second, independent reading of one HTTP/1.1 request for the differential fuzz target: the
// request line, the header section and the body framing of RFC 9112 (§2-§7), written from the RFC
// and not from llhttp. No limits, no allocation concerns; fuzz targets only.
//
// A rejection is "hard" when the RFC says the framing or the message boundary is in doubt (bare CR
// or LF, obs-fold, a header name that is not a token or is followed by whitespace, a control byte
// in a value, a bad or conflicting Content-Length, Transfer-Encoding that does not end in chunked
// or comes with Content-Length or on HTTP/1.0, a chunk size that is not hex or overflows, chunk
// data not followed by CRLF, whitespace oddities in the request line): a proxy that forwards such a
// request reads it differently from someone. It is "soft" for what only a stricter server would
// refuse (a method or target character outside the grammar, an unusual version, whitespace before
// a chunk extension): the reading itself is not in doubt.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace limpet::fuzz::ref {

enum class Verdict { kOk, kIncomplete, kSoftReject, kHardReject };

struct Request {
  Verdict verdict = Verdict::kIncomplete;
  std::string why;             // for a rejection
  std::string soft_reason;     // set whatever the verdict: what a stricter server would refuse
  bool head_complete = false;  // the header section was read (fields below are set)
  bool in_body = false;        // the head and its framing were accepted: a rejection is in the body
  std::string method;
  std::string target;
  int major = 0;
  int minor = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // OWS trimmed
  bool chunked = false;
  std::optional<uint64_t> content_length;
  std::string body;  // decoded (chunks joined), so far
  size_t end = 0;    // kOk: offset just after the message (leading empty lines included)
};

// Reads the request that starts at the beginning of `s` (empty lines before it are skipped).
Request parse_request(std::string_view s);

const char* name(Verdict v);

}  // namespace limpet::fuzz::ref
