// Redis reply handling (store/resp.hpp): what a session store's server (or whoever sits on the
// path to it) sends is fed to limpet's ReplyReader. Checked:
//  - no input crashes, leaks or makes it hold more than its bounds (arrays of at most 64 Ki
//    elements, 1 MiB unparsed);
//  - the replies and the error state do not depend on how the bytes were split: whole, one
//    byte at a time, and at split points drawn from the input give the same result;
//  - after an error nothing more comes out.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "limpet/store/resp.hpp"

namespace limpet::fuzz {
namespace {

std::string describe(const store::Reply& r, int depth = 0) {
  FUZZ_CHECK(depth < 16, "reply nested deeper than the reader allows");
  std::string out = std::to_string(static_cast<int>(r.type)) + ":";
  switch (r.type) {
    case store::Reply::Type::kInteger:
      out += std::to_string(r.integer);
      break;
    case store::Reply::Type::kArray:
      FUZZ_CHECK(r.elements.size() <= 64 * 1024, "array over the bound: " + std::to_string(r.elements.size()));
      out += "[";
      for (const auto& e : r.elements) out += describe(e, depth + 1) + ",";
      out += "]";
      break;
    default:
      out += escape(r.str, 1 << 20);
  }
  return out;
}

struct Outcome {
  std::vector<std::string> replies;
  bool error = false;
};

template <class NextPiece>
Outcome read(std::string_view input, NextPiece next_piece) {
  store::ReplyReader reader;
  Outcome out;
  store::Reply r;
  size_t at = 0;
  while (at < input.size()) {
    const size_t n = std::min(next_piece(), input.size() - at);
    reader.feed(input.substr(at, n));
    at += n;
    while (reader.next(r)) out.replies.push_back(describe(r));
    if (reader.error()) {
      FUZZ_CHECK(!reader.next(r), "a reply after an error");
      out.error = true;
      break;
    }
  }
  return out;
}

}  // namespace
}  // namespace limpet::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace limpet::fuzz;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const Outcome whole = read(input, [&] { return input.size(); });
  const Outcome bytes = read(input, [] { return size_t{1}; });
  Rng rng(input);
  const Outcome pieces = read(input, [&] { return 1 + rng.below(64); });
  // An error cuts the stream: replies parsed before it may differ only in that a split feed
  // could not see the bad byte yet; everything up to the error agrees.
  for (const Outcome* o : {&bytes, &pieces}) {
    FUZZ_CHECK(o->error == whole.error, "error state depends on the split: " + escape(input));
    if (!whole.error) FUZZ_CHECK(o->replies == whole.replies, "replies depend on the split: " + escape(input));
  }
  return 0;
}
