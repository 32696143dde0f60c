// The PROXY protocol parser (net/proxy_protocol.hpp) that reads the first bytes of every
// connection on a proxy_protocol listener. Input byte 0 picks a mode, the rest is a connection's
// first bytes (mode odd: a header built by append_proxy_header from the input's bytes comes first).
// Checked:
//  - parse_proxy_header never reads out of bounds (ASan), kDone consumes at most the input and
//    kProxyMaxLength bytes, kNeedMore only for inputs shorter than kProxyMaxLength, kError always
//    with a reason;
//  - a kDone header is kNeedMore on every proper prefix and the same header on exactly its bytes;
//  - ProxyHeaderReader fed in two pieces (every split point for inputs up to 512 bytes, 64 random
//    ones beyond) and one byte per feed agrees with the whole-input parse: same status, header,
//    reason, and the header ends at the same byte;
//  - a header we build parses back (kDone, exactly its length), and building again from what was
//    parsed gives the same bytes.
#include <netinet/in.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "limpet/net/proxy_protocol.hpp"

namespace limpet::fuzz {
namespace {

using net::ProxyHeader;
using net::ProxyHeaderReader;
using net::ProxyParse;
using Status = ProxyParse::Status;

struct Outcome {
  Status status = Status::kNeedMore;
  size_t end = 0;  // kDone: offset in the input where the header ends
  std::string error;
  ProxyHeader header;
  bool operator==(const Outcome& o) const {
    return status == o.status && end == o.end && error == o.error && (status != Status::kDone || header == o.header);
  }
  std::string str() const {
    return "status=" + std::to_string(static_cast<int>(status)) + " end=" + std::to_string(end) + " error=" + error;
  }
};

Outcome whole(std::string_view in) {
  Outcome o;
  ProxyParse r = net::parse_proxy_header(in, &o.header);
  o.status = r.status;
  if (r.status == Status::kDone) {
    FUZZ_CHECK(r.consumed > 0 && r.consumed <= in.size() && r.consumed <= net::kProxyMaxLength,
               "consumed " + std::to_string(r.consumed) + " of " + escape(in));
    o.end = r.consumed;
  } else if (r.status == Status::kError) {
    FUZZ_CHECK(r.error != nullptr && *r.error != '\0', "no reason for " + escape(in));
    o.error = r.error;
  } else {
    FUZZ_CHECK(in.size() < net::kProxyMaxLength, "needs more after " + std::to_string(in.size()) + " bytes");
  }
  return o;
}

// Feeds the pieces [0, cut_1), [cut_1, cut_2), ... until the reader decides.
template <class Cuts>
Outcome fed(std::string_view in, Cuts next_cut) {
  Outcome o;
  ProxyHeaderReader reader;
  size_t at = 0;
  while (at < in.size()) {
    const size_t cut = next_cut(at);
    const std::string_view piece = in.substr(at, cut - at);
    ProxyParse r = reader.feed(piece);
    o.status = r.status;
    if (r.status == Status::kDone) {
      FUZZ_CHECK(r.consumed > 0 && r.consumed <= piece.size(), "consumed " + std::to_string(r.consumed) +
                                                                   " of a piece of " + std::to_string(piece.size()));
      o.end = at + r.consumed;
      o.header = reader.header();
      return o;
    }
    if (r.status == Status::kError) {
      o.error = r.error;
      return o;
    }
    at = cut;
  }
  return o;
}

void check_parse(std::string_view in, Rng& rng) {
  const Outcome expect = whole(in);
  if (expect.status == Status::kDone) {
    for (size_t n = 0; n < expect.end; ++n) {
      ProxyHeader h;
      FUZZ_CHECK(net::parse_proxy_header(in.substr(0, n), &h).status == Status::kNeedMore,
                 "prefix of " + std::to_string(n) + " bytes of a header is not kNeedMore: " + escape(in));
    }
    FUZZ_CHECK(whole(in.substr(0, expect.end)) == expect, "the header alone parses differently: " + escape(in));
  }
  const auto check_split = [&](size_t split) {
    const Outcome got = fed(in, [&](size_t at) { return at < split ? split : in.size(); });
    FUZZ_CHECK(got == expect, "split at " + std::to_string(split) + ": " + got.str() + " vs whole " + expect.str() +
                                  " for " + escape(in));
  };
  if (in.size() <= 512) {
    for (size_t split = 1; split < in.size(); ++split) check_split(split);
  } else {
    for (int i = 0; i < 64; ++i) check_split(1 + rng.below(in.size() - 1));
  }
  const Outcome bytewise = fed(in, [](size_t at) { return at + 1; });
  FUZZ_CHECK(bytewise == expect, "byte by byte: " + bytewise.str() + " vs whole " + expect.str());
}

// An IPv4 or IPv6 sockaddr from input bytes.
sockaddr_storage address_from(Rng& rng, bool v6) {
  sockaddr_storage ss{};
  if (!v6) {
    auto* s = reinterpret_cast<sockaddr_in*>(&ss);
    s->sin_family = AF_INET;
    s->sin_port = static_cast<uint16_t>(rng.next());
    const uint32_t a = static_cast<uint32_t>(rng.next());
    std::memcpy(&s->sin_addr, &a, 4);
  } else {
    auto* s = reinterpret_cast<sockaddr_in6*>(&ss);
    s->sin6_family = AF_INET6;
    s->sin6_port = static_cast<uint16_t>(rng.next());
    for (int i = 0; i < 16; ++i) s->sin6_addr.s6_addr[i] = static_cast<uint8_t>(rng.next());
    if (rng.below(4) == 0) {  // IPv4-mapped
      std::memset(s->sin6_addr.s6_addr, 0, 10);
      s->sin6_addr.s6_addr[10] = s->sin6_addr.s6_addr[11] = 0xff;
    }
  }
  return ss;
}

std::string built(net::ProxyVersion v, const ProxyHeader& h) {
  std::string out;
  append_proxy_header(v, h.source.get(), h.destination.get(), &out);
  return out;
}

// A header we send parses back to itself.
std::string check_build(uint8_t mode, Rng& rng) {
  const auto version = (mode & 2) != 0 ? net::ProxyVersion::kV2 : net::ProxyVersion::kV1;
  std::string header;
  if ((mode & 12) == 12) {
    append_proxy_local_header(version, &header);
  } else {
    sockaddr_storage src = address_from(rng, (mode & 4) != 0), dst = address_from(rng, (mode & 8) != 0);
    append_proxy_header(version, reinterpret_cast<sockaddr*>(&src), reinterpret_cast<sockaddr*>(&dst), &header);
  }
  ProxyHeader parsed;
  ProxyParse r = net::parse_proxy_header(header, &parsed);
  FUZZ_CHECK(r.status == Status::kDone && r.consumed == header.size(),
             "built header does not parse: " + escape(header) + " " + (r.error ? r.error : ""));
  if (parsed.has_addresses) {
    FUZZ_CHECK(built(version, parsed) == header, "built again differs: " + escape(header));
  }
  return header;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet::fuzz;
  if (size == 0) return 0;
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  Rng rng(rest);
  std::string input;
  if ((data[0] & 1) != 0) input = check_build(data[0], rng);
  input.append(rest);
  check_parse(input, rng);
  return 0;
}
