#include "limpet/http/engineio.hpp"

#include <cstdint>

#include "limpet/util/strings.hpp"

namespace limpet::http::engineio {
namespace {

enum class Step { kOk, kNeedMore, kBad };

// Deep enough for any real handshake ("upgrades" is one array); shallow enough that a hostile
// body cannot recurse far.
constexpr int kMaxDepth = 16;
// "96:" — a v3 length prefix longer than this is not a handshake.
constexpr size_t kMaxLengthDigits = 7;

// JSON whitespace (RFC 8259 §2).
bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

bool sid_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// A JSON scanner over a possibly truncated buffer: running out of bytes is kNeedMore, anything
// that cannot become valid JSON is kBad. It reads only what the handshake needs.
class Scanner {
 public:
  explicit Scanner(std::string_view s) : s_(s) {}

  void skip_ws() {
    while (pos_ < s_.size() && is_ws(s_[pos_])) ++pos_;
  }

  // Peeks the next non-blank byte.
  Step peek(char* c) {
    skip_ws();
    if (pos_ >= s_.size()) return Step::kNeedMore;
    *c = s_[pos_];
    return Step::kOk;
  }

  Step expect(char want) {
    char c = 0;
    if (Step st = peek(&c); st != Step::kOk) return st;
    if (c != want) return Step::kBad;
    ++pos_;
    return Step::kOk;
  }

  // A string starting at the current '"'. Escapes are decoded into `out` (if given); a code
  // point beyond ASCII is stored as '\x01', which no sid accepts, rather than encoded properly.
  Step string(std::string* out) {
    if (Step st = expect('"'); st != Step::kOk) return st;
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return Step::kOk;
      if (static_cast<unsigned char>(c) < 0x20) return Step::kBad;
      if (c != '\\') {
        if (out != nullptr) out->push_back(c);
        continue;
      }
      if (pos_ >= s_.size()) return Step::kNeedMore;
      const char e = s_[pos_++];
      char decoded = 0;
      switch (e) {
        case '"': decoded = '"'; break;
        case '\\': decoded = '\\'; break;
        case '/': decoded = '/'; break;
        case 'b': decoded = '\b'; break;
        case 'f': decoded = '\f'; break;
        case 'n': decoded = '\n'; break;
        case 'r': decoded = '\r'; break;
        case 't': decoded = '\t'; break;
        case 'u': {
          uint32_t cp = 0;
          for (int k = 0; k < 4; ++k) {
            if (pos_ >= s_.size()) return Step::kNeedMore;
            const int h = hex_value(s_[pos_++]);
            if (h < 0) return Step::kBad;
            cp = cp * 16 + static_cast<uint32_t>(h);
          }
          decoded = cp < 0x80 ? static_cast<char>(cp) : '\x01';
          break;
        }
        default:
          return Step::kBad;
      }
      if (out != nullptr) out->push_back(decoded);
    }
    return Step::kNeedMore;
  }

  Step value(int depth) {
    if (depth > kMaxDepth) return Step::kBad;
    char c = 0;
    if (Step st = peek(&c); st != Step::kOk) return st;
    if (c == '"') return string(nullptr);
    if (c == '{') return container('}', depth, true);
    if (c == '[') return container(']', depth, false);
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    if (c == 't') return literal("true");
    if (c == 'f') return literal("false");
    if (c == 'n') return literal("null");
    return Step::kBad;
  }

  // The handshake object itself: stops at the first "sid" key.
  Step find_sid(std::string* sid) {
    if (Step st = expect('{'); st != Step::kOk) return st;
    bool first = true;
    while (true) {
      char c = 0;
      if (Step st = peek(&c); st != Step::kOk) return st;
      if (c == '}') return Step::kBad;  // the object ended without a sid
      if (!first) {
        if (c != ',') return Step::kBad;
        ++pos_;
      }
      first = false;
      std::string key;
      if (Step st = string(&key); st != Step::kOk) return st;
      if (Step st = expect(':'); st != Step::kOk) return st;
      if (key == "sid") {
        if (Step st = peek(&c); st != Step::kOk) return st;
        if (c != '"') return Step::kBad;
        return string(sid);
      }
      if (Step st = value(1); st != Step::kOk) return st;
    }
  }

 private:
  Step container(char close, int depth, bool object) {
    ++pos_;  // '{' or '['
    bool first = true;
    while (true) {
      char c = 0;
      if (Step st = peek(&c); st != Step::kOk) return st;
      if (c == close) {
        ++pos_;
        return Step::kOk;
      }
      if (!first) {
        if (c != ',') return Step::kBad;
        ++pos_;
      }
      first = false;
      if (object) {
        if (Step st = string(nullptr); st != Step::kOk) return st;
        if (Step st = expect(':'); st != Step::kOk) return st;
      }
      if (Step st = value(depth + 1); st != Step::kOk) return st;
    }
  }

  Step number() {
    const size_t start = pos_;
    while (pos_ < s_.size()) {
      const char c = s_[pos_];
      if (!((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E')) break;
      ++pos_;
    }
    // A number at the very end of the buffer may continue in the next read.
    if (pos_ >= s_.size()) return Step::kNeedMore;
    return pos_ > start ? Step::kOk : Step::kBad;
  }

  Step literal(std::string_view word) {
    for (char w : word) {
      if (pos_ >= s_.size()) return Step::kNeedMore;
      if (s_[pos_++] != w) return Step::kBad;
    }
    return Step::kOk;
  }

  std::string_view s_;
  size_t pos_ = 0;
};

}  // namespace

bool valid_sid(std::string_view sid) {
  if (sid.empty() || sid.size() > kMaxSidLength) return false;
  for (char c : sid) {
    if (!sid_char(c)) return false;
  }
  return true;
}

HandshakeResult parse_handshake(std::string_view body) {
  HandshakeResult result;
  auto need_more = [&]() {
    result.status = body.size() >= kMaxHandshakeBody ? HandshakeStatus::kInvalid : HandshakeStatus::kNeedMore;
    return result;
  };
  if (body.empty()) return need_more();

  std::string_view packet = body;
  bool complete_packet = false;  // v3: the declared packet length is all here
  if (body[0] >= '1' && body[0] <= '9') {
    // v3 payload: <length>:<packet>[<length>:<packet>...]. Only the first packet matters; the
    // length bounds it, so a JSON object running past it is malformed.
    size_t i = 0;
    size_t length = 0;
    while (i < body.size() && body[i] >= '0' && body[i] <= '9') {
      if (++i > kMaxLengthDigits) return result;
      length = length * 10 + static_cast<size_t>(body[i - 1] - '0');
    }
    if (i >= body.size()) return need_more();
    if (body[i] != ':') return result;
    packet = body.substr(i + 1);
    if (packet.size() >= length) {
      packet = packet.substr(0, length);
      complete_packet = true;
    }
  } else if (body[0] != '0') {
    return result;  // not an open packet: JSONP, HTML error page, binary framing, garbage
  }

  if (packet.empty()) return complete_packet ? result : need_more();
  if (packet[0] != '0') return result;  // first packet is not "open"
  Scanner scanner(packet.substr(1));
  std::string sid;
  switch (scanner.find_sid(&sid)) {
    case Step::kOk:
      if (!valid_sid(sid)) return result;
      result.status = HandshakeStatus::kFound;
      result.sid = std::move(sid);
      return result;
    case Step::kNeedMore:
      if (complete_packet) return result;
      return need_more();
    case Step::kBad:
      return result;
  }
  return result;
}

std::optional<std::string> parse_handshake_sid(std::string_view body) {
  HandshakeResult r = parse_handshake(body);
  if (r.status != HandshakeStatus::kFound) return std::nullopt;
  return std::move(r.sid);
}

std::optional<std::string> sid_from_set_cookie(std::string_view set_cookie_value, std::string_view cookie_name) {
  const size_t semi = set_cookie_value.find(';');
  const std::string_view pair = set_cookie_value.substr(0, semi);
  const size_t eq = pair.find('=');
  if (eq == std::string_view::npos || trim(pair.substr(0, eq)) != cookie_name) return std::nullopt;
  std::string_view value = trim(pair.substr(eq + 1));
  if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
  if (!valid_sid(value)) return std::nullopt;

  // A cookie being deleted names a session that is over, not one to learn.
  std::string_view attrs = semi == std::string_view::npos ? std::string_view() : set_cookie_value.substr(semi + 1);
  while (!attrs.empty()) {
    const size_t next = attrs.find(';');
    const std::string_view attr = attrs.substr(0, next);
    attrs = next == std::string_view::npos ? std::string_view() : attrs.substr(next + 1);
    const size_t aeq = attr.find('=');
    if (aeq == std::string_view::npos || !iequals(trim(attr.substr(0, aeq)), "max-age")) continue;
    const std::string_view age = trim(attr.substr(aeq + 1));
    if (age.empty() || age.front() == '-' || age.find_first_not_of('0') == std::string_view::npos) {
      return std::nullopt;
    }
  }
  return std::string(value);
}

}  // namespace limpet::http::engineio
