// The Engine.IO handshake parser (v4 `0{...}` and v3 `<len>:0{...}` framings) and the `io`
// Set-Cookie reader. Two kinds of input:
//  - raw (input byte 0 is '0'-'9', as every real handshake body starts): the body as a backend
//    sends it;
//  - built (any other byte 0): the rest of the input steers a generator that writes a valid
//    handshake around a sid it chose (v3 or v4, keys before "sid", nested values, escapes,
//    blanks, later packets), which must then be found exactly.
// Checked for both, over every prefix of the body (bodies arrive in pieces and the learner asks
// again with more): a prefix that is kInvalid stays kInvalid, a kFound sid never changes later,
// a kNeedMore never becomes a different sid, a found sid is valid_sid(); a built handshake is
// never kInvalid on any prefix and is found with its sid. The same bytes as a Set-Cookie value
// give a valid sid or nothing, and a deletion (Max-Age=0) never gives one.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "limpet/http/engineio.hpp"

namespace limpet::fuzz {
namespace {

namespace eio = http::engineio;
using eio::HandshakeStatus;

const char* name(HandshakeStatus s) {
  switch (s) {
    case HandshakeStatus::kFound: return "kFound";
    case HandshakeStatus::kNeedMore: return "kNeedMore";
    case HandshakeStatus::kInvalid: return "kInvalid";
  }
  return "?";
}

// Every prefix, in order; `expected_sid` set for a built handshake.
void check_prefixes(std::string_view body, const std::optional<std::string>& expected_sid,
                    size_t expected_end = 0) {
  std::optional<std::string> found;
  bool invalid = false;
  size_t invalid_at = 0;
  const size_t step = body.size() > 512 ? body.size() / 256 : 1;  // bounded work per input
  for (size_t n = 0; n <= body.size(); n = (n == body.size() ? n + 1 : std::min(body.size(), n + step))) {
    const std::string_view prefix = body.substr(0, n);
    const eio::HandshakeResult r = eio::parse_handshake(prefix);
    const auto where = [&]() -> std::string {
      return "prefix " + std::to_string(n) + " of \"" + escape(body) + "\": " + name(r.status);
    };
    if (invalid) {
      FUZZ_CHECK(r.status == HandshakeStatus::kInvalid,
                 "kInvalid at " + std::to_string(invalid_at) + " became something else at " + where());
    }
    if (found) {
      FUZZ_CHECK(r.status == HandshakeStatus::kFound && r.sid == *found,
                 "sid \"" + escape(*found) + "\" found, then " + where() + " sid \"" + escape(r.sid) + "\"");
    }
    switch (r.status) {
      case HandshakeStatus::kFound:
        FUZZ_CHECK(eio::valid_sid(r.sid), "found an invalid sid \"" + escape(r.sid) + "\" at " + where());
        found = r.sid;
        break;
      case HandshakeStatus::kNeedMore:
        FUZZ_CHECK(r.sid.empty(), "kNeedMore with a sid at " + where());
        FUZZ_CHECK(n < eio::kMaxHandshakeBody, "kNeedMore past kMaxHandshakeBody at " + where());
        break;
      case HandshakeStatus::kInvalid:
        if (!invalid) invalid_at = n;
        invalid = true;
        break;
    }
    if (expected_sid) {
      FUZZ_CHECK(r.status != HandshakeStatus::kInvalid, "a valid handshake read as kInvalid at " + where());
      if (n >= expected_end) {
        FUZZ_CHECK(r.status == HandshakeStatus::kFound && r.sid == *expected_sid,
                   "handshake with sid \"" + escape(*expected_sid) + "\" not found at " + where() + " \"" +
                       escape(r.sid) + "\"");
      } else {
        FUZZ_CHECK(r.status == HandshakeStatus::kNeedMore,
                   "sid found before its closing quote (end " + std::to_string(expected_end) + ") at " + where());
      }
    }
    // parse_handshake_sid agrees.
    const auto sid = eio::parse_handshake_sid(prefix);
    FUZZ_CHECK(sid.has_value() == (r.status == HandshakeStatus::kFound) && (!sid || *sid == r.sid),
               "parse_handshake_sid disagrees at " + where());
  }
}

// A JSON value from the provider, never containing "sid" as a key at the top level.
void json_value(FuzzedDataProvider& p, std::string& out, int depth);

void json_string(FuzzedDataProvider& p, std::string& out) {
  out += '"';
  const size_t n = p.ConsumeIntegralInRange<size_t>(0, 12);
  for (size_t i = 0; i < n; ++i) {
    const auto c = p.ConsumeIntegral<uint8_t>();
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      static constexpr const char* kEsc[] = {"\\n", "\\t", "\\r", "\\b", "\\f", "\\/", "\\u0041", "\\u00e9"};
      out += kEsc[c % 8];
    } else {
      out += static_cast<char>(c);  // bytes >= 0x80 are allowed raw in the scanner's strings
    }
  }
  out += '"';
}

void blanks(FuzzedDataProvider& p, std::string& out) {
  static constexpr char kWs[] = {' ', '\t', '\r', '\n'};
  const size_t n = p.ConsumeIntegralInRange<size_t>(0, 2);
  for (size_t i = 0; i < n; ++i) out += kWs[p.ConsumeIntegralInRange<size_t>(0, 3)];
}

void json_value(FuzzedDataProvider& p, std::string& out, int depth) {
  blanks(p, out);
  const int kind = p.ConsumeIntegralInRange<int>(0, depth >= 4 ? 3 : 5);
  switch (kind) {
    case 0: json_string(p, out); break;
    case 1: out += std::to_string(p.ConsumeIntegralInRange<int64_t>(-100000, 100000)); break;
    case 2: out += p.ConsumeBool() ? "true" : "false"; break;
    case 3: out += p.ConsumeBool() ? "null" : "1.5e3"; break;
    case 4: {
      out += '[';
      const size_t n = p.ConsumeIntegralInRange<size_t>(0, 3);
      for (size_t i = 0; i < n; ++i) {
        if (i > 0) out += ',';
        json_value(p, out, depth + 1);
      }
      blanks(p, out);
      out += ']';
      break;
    }
    default: {
      out += '{';
      const size_t n = p.ConsumeIntegralInRange<size_t>(0, 3);
      for (size_t i = 0; i < n; ++i) {
        if (i > 0) out += ',';
        blanks(p, out);
        json_string(p, out);
        blanks(p, out);
        out += ':';
        json_value(p, out, depth + 1);
      }
      blanks(p, out);
      out += '}';
    }
  }
  blanks(p, out);
}

// A valid handshake; returns the sid and sets `sid_end` to the offset just after its closing quote.
std::string build(FuzzedDataProvider& p, std::string& body, size_t& sid_end) {
  static constexpr char kSidChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  std::string sid;
  const size_t len = p.ConsumeIntegralInRange<size_t>(1, eio::kMaxSidLength);
  for (size_t i = 0; i < len; ++i) sid += kSidChars[p.ConsumeIntegralInRange<size_t>(0, sizeof kSidChars - 2)];

  std::string packet = "0{";
  const size_t before = p.ConsumeIntegralInRange<size_t>(0, 4);
  for (size_t i = 0; i < before; ++i) {
    blanks(p, packet);
    std::string key;
    json_string(p, key);
    if (key == "\"sid\"") key = "\"sid2\"";
    packet += key;
    blanks(p, packet);
    packet += ':';
    json_value(p, packet, 1);
    packet += ',';
  }
  blanks(p, packet);
  // "sid" itself, sometimes with a key escape, and the value with some escaped characters.
  packet += p.ConsumeBool() ? "\"sid\"" : "\"\\u0073id\"";
  blanks(p, packet);
  packet += ':';
  blanks(p, packet);
  packet += '"';
  for (char c : sid) {
    if (p.ConsumeIntegralInRange<int>(0, 7) == 0) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\u%04X", static_cast<unsigned>(c));
      packet += esc;
    } else {
      packet += c;
    }
  }
  packet += '"';
  const size_t sid_end_in_packet = packet.size();
  blanks(p, packet);
  packet += ",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}";

  const bool v3 = p.ConsumeBool();
  if (v3) {
    const std::string prefix = std::to_string(packet.size()) + ":";
    body = prefix + packet;
    sid_end = prefix.size() + sid_end_in_packet;
    if (p.ConsumeBool()) body += "2:40";
  } else {
    body = packet;
    sid_end = sid_end_in_packet;
  }
  return sid;
}

void check_set_cookie(std::string_view value) {
  const auto sid = eio::sid_from_set_cookie(value);
  if (sid) {
    FUZZ_CHECK(eio::valid_sid(*sid), "Set-Cookie gave an invalid sid \"" + escape(*sid) + "\"");
    FUZZ_CHECK(value.find(*sid) != std::string_view::npos, "Set-Cookie sid not in the value");
  }
  const std::string deleted = std::string(value) + "; Max-Age=0";
  FUZZ_CHECK(!eio::sid_from_set_cookie(deleted), "a deleted cookie gave a sid: \"" + escape(deleted) + "\"");
  const auto other = eio::sid_from_set_cookie(value, "limpet_io_other");
  if (other) FUZZ_CHECK(value.find("limpet_io_other") != std::string_view::npos, "another cookie's sid");
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet::fuzz;
  if (size == 0) return 0;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (data[0] >= '0' && data[0] <= '9') {
    check_prefixes(input, std::nullopt);
  } else {
    FuzzedDataProvider p(data + 1, size - 1);
    std::string body;
    size_t sid_end = 0;
    const std::string sid = build(p, body, sid_end);
    if (body.size() < limpet::http::engineio::kMaxHandshakeBody) check_prefixes(body, sid, sid_end);
  }
  check_set_cookie(input);
  return 0;
}
