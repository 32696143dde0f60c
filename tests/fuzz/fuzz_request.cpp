// Request heads and their rewriting. The input is what a client sends on one connection
// (pipelined requests, bodies, a WebSocket upgrade). Checked:
//  - the same bytes in one read, in random reads and (small inputs) one byte per read give the
//    same messages, heads, bodies and outcome;
//  - every request the proxy would forward (complete, a valid Host) is rewritten with
//    build_request_head, its body framed as exchange.cpp frames it, and the result parses again
//    with limpet's parser as exactly one message with the same method, target, framing, body and
//    upgrade; it carries at most one of Content-Length and Transfer-Encoding, a body length that
//    agrees with its Content-Length, no hop-by-hop header, the client's headers otherwise in order,
//    and one X-Forwarded-For ending with the client address.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_http.hpp"
#include "limpet/http/framing.hpp"
#include "limpet/http/rewrite.hpp"

namespace limpet::fuzz {
namespace {

using http::Parser;

bool is_forwarding_header(std::string_view name, bool add_forwarded) {
  return http::iequals(name, "x-forwarded-for") || http::iequals(name, "x-forwarded-proto") ||
         http::iequals(name, "x-forwarded-host") || (add_forwarded && http::iequals(name, "forwarded"));
}

bool hop_by_hop(const http::RequestHead& head, std::string_view name) {
  for (const auto& h : head.headers) {
    if (http::iequals(h.name, "connection") && http::has_token(h.value, name)) return true;
  }
  return http::is_hop_by_hop(name, "");
}

// The bytes exchange.cpp sends for a request: the rewritten head, then the body as one chunk
// (chunked) or as is, then the last chunk.
std::string forwarded_bytes(const std::string& head, const ParsedMessage& m) {
  std::string wire;
  http::FramedBody framed(m.request->chunked ? http::BodyFraming::kChunked : http::BodyFraming::kLength, m.body,
                          head);
  for (std::string_view part : framed.parts()) wire.append(part);
  if (m.request->chunked) wire.append(http::kLastChunk);
  return wire;
}

void check_rewrite(const ParsedMessage& m, const http::ForwardInfo& info, std::string_view input) {
  const http::RequestHead& in = *m.request;
  const auto where = [&]() -> std::string { return "request ending at " + std::to_string(m.end) + " of \"" + escape(input) + "\""; };

  // What the client's head says must be what the client sent.
  if (in.content_length) {
    FUZZ_CHECK(!in.chunked, "both Content-Length and chunked accepted: " + where());
    FUZZ_CHECK(m.body.size() == *in.content_length,
               "Content-Length " + std::to_string(*in.content_length) + " but " + std::to_string(m.body.size()) +
                   " body bytes read: " + where());
  }

  std::string head;
  http::build_request_head(in, info, &head);
  const std::string wire = forwarded_bytes(head, m);
  const auto whereout = [&]() -> std::string { return where() + "\n    rewritten: \"" + escape(wire) + "\""; };

  // Framing headers, counted in the text itself.
  size_t lengths = 0;
  size_t encodings = 0;
  size_t xff = 0;
  size_t hosts = 0;
  DriveOptions big;
  big.limits = {1 << 20, 1 << 20};
  const StreamResult again = drive(Parser::Kind::kRequest, wire, {}, big);
  FUZZ_CHECK(again.error_status == 0, "the rewritten request does not parse (" + again.error_reason + "): " + whereout());
  FUZZ_CHECK(again.messages.size() == 1 && again.messages[0].complete,
             "the rewritten request is not exactly one complete message: " + whereout() + "\n" + again.summary());
  const ParsedMessage& o = again.messages[0];
  FUZZ_CHECK(o.end == wire.size(), "bytes left over after the rewritten request: " + whereout());
  const http::RequestHead& out = *o.request;
  for (const auto& h : out.headers) {
    lengths += http::iequals(h.name, "content-length") ? 1 : 0;
    encodings += http::iequals(h.name, "transfer-encoding") ? 1 : 0;
    xff += http::iequals(h.name, "x-forwarded-for") ? 1 : 0;
    hosts += http::iequals(h.name, "host") ? 1 : 0;
  }
  FUZZ_CHECK(lengths + encodings <= 1, "more than one framing header: " + whereout());
  FUZZ_CHECK(out.method == in.method, "method changed: " + whereout());
  FUZZ_CHECK(out.target == in.target, "target changed: " + whereout());
  FUZZ_CHECK(out.http_major == 1 && out.http_minor == 1, "not HTTP/1.1: " + whereout());
  FUZZ_CHECK(out.chunked == in.chunked, "chunked framing changed: " + whereout());
  FUZZ_CHECK(out.content_length == in.content_length, "Content-Length changed: " + whereout());
  FUZZ_CHECK(o.body == m.body, "body changed: " + whereout());
  if (out.content_length) {
    FUZZ_CHECK(o.body.size() == *out.content_length, "forwarded Content-Length disagrees with the body: " + whereout());
  }
  FUZZ_CHECK(out.websocket == in.websocket, "WebSocket upgrade changed: " + whereout());
  FUZZ_CHECK(out.upgrade == in.websocket, "an Upgrade forwarded that is not a WebSocket handshake: " + whereout());
  FUZZ_CHECK(xff == 1, "not exactly one X-Forwarded-For: " + whereout());
  FUZZ_CHECK(out.header("x-forwarded-for")->ends_with(info.client_ip),
             "X-Forwarded-For does not end with the client: " + whereout());
  FUZZ_CHECK(hosts <= 1, "several Host headers forwarded: " + whereout());

  // The client's end-to-end headers, in order and unchanged; nothing hop-by-hop.
  std::vector<http::Header> expected;
  for (const auto& h : in.headers) {
    if (hop_by_hop(in, h.name) || is_forwarding_header(h.name, info.add_forwarded)) continue;
    expected.push_back(h);
  }
  size_t k = 0;
  for (const auto& h : out.headers) {
    if (is_forwarding_header(h.name, info.add_forwarded)) continue;
    if (http::iequals(h.name, "transfer-encoding") && in.chunked) continue;
    if ((http::iequals(h.name, "connection") || http::iequals(h.name, "upgrade")) && in.websocket) continue;
    FUZZ_CHECK(k < expected.size() && h.name == expected[k].name && h.value == expected[k].value,
               "header " + std::string(h.name) + " forwarded out of order or changed: " + whereout());
    ++k;
  }
  FUZZ_CHECK(k == expected.size(), "a client header was dropped: " + whereout());
}

// Everything of two feedings that must not depend on how the bytes were cut into reads.
std::string comparable(const StreamResult& r) {
  StreamResult copy;
  for (const auto& m : r.messages) {
    if (!m.complete && r.error_status != 0) continue;  // a body cut by an error may stop anywhere
    ParsedMessage& c = copy.messages.emplace_back();
    c.request = m.request ? copy_request(*m.request) : nullptr;
    c.body = m.body;
    c.complete = m.complete;
    c.end = m.end;
  }
  copy.tunnel = r.tunnel;
  copy.tunnel_at = r.tunnel_at;
  copy.error_status = r.error_status != 0 ? 1 : 0;  // which of 400/414/431 may depend on the cuts
  return copy.summary();
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet;
  using namespace limpet::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  const StreamResult whole = drive(http::Parser::Kind::kRequest, input, {});
  const std::string expect = comparable(whole);
  const StreamResult cut = drive(http::Parser::Kind::kRequest, input, random_cuts(input, 8, 1));
  FUZZ_CHECK(comparable(cut) == expect, "random reads differ from one read for \"" + escape(input) + "\"\nwhole: " +
                                            whole.summary() + "\ncut:   " + cut.summary());
  if (size <= 1024) {
    const StreamResult bytes = drive(http::Parser::Kind::kRequest, input, every_byte(size));
    FUZZ_CHECK(comparable(bytes) == expect, "byte-by-byte reads differ from one read for \"" + escape(input) +
                                                "\"\nwhole: " + whole.summary() + "\nbytes: " + bytes.summary());
  }
  if (whole.error_status != 0) {
    const int s = whole.error_status;
    FUZZ_CHECK(s == 400 || s == 414 || s == 431 || s == 501 || s == 505, "unexpected error status " + std::to_string(s));
  }

  Rng rng(input);
  for (const auto& m : whole.messages) {
    if (!m.complete || !has_valid_host(*m.request)) continue;
    http::ForwardInfo info;
    info.client_ip = rng.below(2) == 0 ? "203.0.113.7" : "2001:db8::7";
    info.tls = rng.below(2) == 0;
    info.add_forwarded = rng.below(2) == 0;
    check_rewrite(m, info, input);
  }
  return 0;
}
