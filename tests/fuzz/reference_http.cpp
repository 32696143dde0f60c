#include "reference_http.hpp"

namespace limpet::fuzz::ref {
namespace {

// RFC 9110 §5.6.2.
bool tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-': case '.':
    case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool token(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!tchar(c)) return false;
  }
  return true;
}

bool ctl(unsigned char c) { return c < 0x20 || c == 0x7f; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string_view ows_trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

enum class Line { kOk, kIncomplete, kBad };

// One CRLF-terminated line from `pos`; a CR or LF anywhere else is kBad (RFC 9112 §2.2: a bare CR
// must be rejected; a bare LF is the reading a recipient MAY take, and one a proxy must not,
// since the next hop may not take it).
Line read_line(std::string_view s, size_t& pos, std::string_view& line, std::string& why) {
  const size_t at = s.find_first_of("\r\n", pos);
  if (at == std::string_view::npos) return Line::kIncomplete;
  if (s[at] == '\n') {
    why = "bare LF at " + std::to_string(at);
    return Line::kBad;
  }
  if (at + 1 >= s.size()) return Line::kIncomplete;
  if (s[at + 1] != '\n') {
    why = "bare CR at " + std::to_string(at);
    return Line::kBad;
  }
  line = s.substr(pos, at - pos);
  pos = at + 2;
  return Line::kOk;
}

struct Reader {
  std::string_view s;
  size_t pos = 0;
  Request r;

  Request& hard(std::string why) {
    r.verdict = Verdict::kHardReject;
    r.why = std::move(why);
    return r;
  }
  // Noted, and reading goes on: a hard rejection later still counts.
  std::string soft_why;
  Request& soft(std::string why) {
    if (soft_why.empty()) soft_why = std::move(why);
    return r;
  }
  Request& incomplete() {
    r.verdict = Verdict::kIncomplete;
    return r;
  }

  // A field line (header or trailer): false with `r` set to a rejection. obs-fold (a line that
  // starts with whitespace) continues the previous field: RFC 9112 §5.2 lets a recipient replace
  // it with SP, which is the reading taken here (rejecting it is the other permitted answer).
  bool field(std::string_view line, std::vector<std::pair<std::string, std::string>>* into) {
    if (line.front() == ' ' || line.front() == '\t') {
      if (into == nullptr || into->empty()) {
        hard("obs-fold with no field before it");
        return false;
      }
      const std::string_view more = ows_trim(line);
      for (unsigned char c : more) {
        if (ctl(c) && c != '\t') {
          hard("control byte " + std::to_string(c) + " in a folded line");
          return false;
        }
      }
      std::string& value = into->back().second;
      if (!more.empty()) value += (value.empty() ? "" : " ") + std::string(more);
      return true;
    }
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      hard("a field line without a colon");
      return false;
    }
    const std::string_view name = line.substr(0, colon);
    if (!token(name)) {
      hard("field name \"" + std::string(name) + "\" is not a token (whitespace before the colon?)");
      return false;
    }
    const std::string_view value = ows_trim(line.substr(colon + 1));
    for (unsigned char c : value) {
      if (ctl(c) && c != '\t') {
        hard("control byte " + std::to_string(c) + " in field " + std::string(name));
        return false;
      }
    }
    if (into != nullptr) into->emplace_back(std::string(name), std::string(value));
    return true;
  }

  Request& request_line() {
    // RFC 9112 §2.2: empty lines before the request line are ignored.
    while (true) {
      if (s.substr(pos).starts_with("\r\n")) {
        pos += 2;
      } else if (pos < s.size() && (s[pos] == '\n' || (s[pos] == '\r' && pos + 1 < s.size()))) {
        return hard("stray CR or LF before the request line");
      } else {
        break;
      }
    }
    std::string_view line;
    std::string why;
    switch (read_line(s, pos, line, why)) {
      case Line::kIncomplete: return incomplete();
      case Line::kBad: return hard("request line: " + why);
      case Line::kOk: break;
    }
    for (unsigned char c : line) {
      if (ctl(c)) return hard("control byte " + std::to_string(c) + " in the request line");
    }
    // RFC 9112 §3: recipients MAY split on runs of whitespace instead of single SPs; that is the
    // reading taken (limpet writes the line again with single spaces). Leading or trailing
    // whitespace, or any number of words but three, is not a request line.
    std::vector<std::string_view> words;
    for (size_t at = 0; at < line.size();) {
      const size_t sp = line.find(' ', at);
      if (sp == at) return hard("request line with leading or doubled-up SP at the start");
      words.push_back(line.substr(at, sp == std::string_view::npos ? std::string_view::npos : sp - at));
      if (sp == std::string_view::npos) break;
      at = line.find_first_not_of(' ', sp);
      if (at == std::string_view::npos) return hard("request line with trailing SP");
    }
    if (words.size() != 3) return hard("request line is not METHOD SP TARGET SP VERSION");
    const std::string_view method = words[0];
    const std::string_view target = words[1];
    const std::string_view version = words[2];
    r.method = std::string(method);
    r.target = std::string(target);
    if (!token(method)) soft("method is not a token");
    for (unsigned char c : target) {
      if (c > 0x7e) soft("target byte above 0x7e");
    }
    if (version.size() != 8 || !version.starts_with("HTTP/") || version[6] != '.' || version[5] < '0' ||
        version[5] > '9' || version[7] < '0' || version[7] > '9') {
      soft("version is not HTTP/D.D");
      r.major = r.minor = 1;
      return r;
    }
    r.major = version[5] - '0';
    r.minor = version[7] - '0';
    if (r.major != 1) soft("not HTTP/1.x");
    return r;
  }

  Request& headers() {
    while (true) {
      std::string_view line;
      std::string why;
      switch (read_line(s, pos, line, why)) {
        case Line::kIncomplete: return incomplete();
        case Line::kBad: return hard("header section: " + why);
        case Line::kOk: break;
      }
      if (line.empty()) break;
      if (!field(line, &r.headers)) return r;
    }
    r.head_complete = true;
    return r;
  }

  Request& framing() {
    std::vector<std::string> codings;
    bool have_te = false;
    std::vector<std::string_view> lengths;
    for (const auto& [name, value] : r.headers) {
      const std::string n = lower(name);
      if (n == "transfer-encoding") {
        have_te = true;
        std::string_view v = value;
        while (true) {
          const size_t comma = v.find(',');
          const std::string_view c = ows_trim(v.substr(0, comma));
          if (!c.empty()) codings.push_back(lower(c));
          if (comma == std::string_view::npos) break;
          v.remove_prefix(comma + 1);
        }
      } else if (n == "content-length") {
        std::string_view v = value;
        while (true) {
          const size_t comma = v.find(',');
          lengths.push_back(ows_trim(v.substr(0, comma)));
          if (comma == std::string_view::npos) break;
          v.remove_prefix(comma + 1);
        }
      }
    }
    if (have_te && codings.empty()) {
      // An empty list: the header is present but names nothing. §6.3 wants 400; reading it as
      // absent (what llhttp does) is the only other reading there is.
      soft("an empty Transfer-Encoding");
      have_te = false;
    }
    if (have_te) {
      if (!lengths.empty()) return hard("Transfer-Encoding with Content-Length");
      if (r.major == 1 && r.minor == 0) return hard("Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1: faulty framing)");
      if (codings.empty() || codings.back() != "chunked") return hard("request Transfer-Encoding not ending in chunked");
      for (size_t i = 0; i + 1 < codings.size(); ++i) {
        if (codings[i] == "chunked") return hard("chunked applied twice");
      }
      r.chunked = true;
      return r;
    }
    if (!lengths.empty()) {
      std::optional<uint64_t> length;
      for (std::string_view v : lengths) {
        if (v.empty()) return hard("empty Content-Length");
        uint64_t n = 0;
        for (char c : v) {
          if (c < '0' || c > '9') return hard("Content-Length \"" + std::string(v) + "\" is not digits");
          const auto d = static_cast<uint64_t>(c - '0');
          if (n > (UINT64_MAX - d) / 10) return hard("Content-Length overflows");
          n = n * 10 + d;
        }
        if (length && *length != n) return hard("conflicting Content-Length values");
        length = n;
      }
      r.content_length = length;
    }
    return r;
  }

  Request& body() {
    if (r.content_length) {
      const size_t have = s.size() - pos;
      if (have < *r.content_length) {
        r.body = std::string(s.substr(pos));
        return incomplete();
      }
      r.body = std::string(s.substr(pos, static_cast<size_t>(*r.content_length)));
      pos += static_cast<size_t>(*r.content_length);
      r.end = pos;
      r.verdict = Verdict::kOk;
      return r;
    }
    if (!r.chunked) {
      r.end = pos;
      r.verdict = Verdict::kOk;
      return r;
    }
    while (true) {
      std::string_view line;
      std::string why;
      switch (read_line(s, pos, line, why)) {
        case Line::kIncomplete: return incomplete();
        case Line::kBad: return hard("chunk size line: " + why);
        case Line::kOk: break;
      }
      size_t i = 0;
      uint64_t size = 0;
      auto hexval = [](char c) {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      while (i < line.size() && hexval(line[i]) >= 0) {
        if (size > (UINT64_MAX >> 4)) return hard("chunk size overflows");
        size = size * 16 + static_cast<uint64_t>(hexval(line[i]));
        ++i;
      }
      if (i == 0) return hard("chunk size is not hex");
      std::string_view rest = line.substr(i);
      const size_t blank = rest.find_first_not_of(" \t");
      const bool bws = !rest.empty() && blank != 0;
      rest = blank == std::string_view::npos ? std::string_view() : rest.substr(blank);
      if (!rest.empty() && rest.front() != ';') return hard("garbage after the chunk size");
      // The extension is dropped by whoever decodes the body; only its end matters (read_line
      // found it). A NUL still counts: C-string readers stop there.
      if (rest.find('\0') != std::string_view::npos) return hard("NUL in a chunk extension");
      if (bws && rest.empty()) soft("whitespace after the chunk size");
      if (size == 0) break;
      if (s.size() - pos < size) {
        r.body += s.substr(pos);
        return incomplete();
      }
      r.body += s.substr(pos, static_cast<size_t>(size));
      pos += static_cast<size_t>(size);
      if (s.size() - pos < 2) {
        if (s.substr(pos) == "\r" || pos == s.size()) return incomplete();
        return hard("chunk data not followed by CRLF");
      }
      if (s.substr(pos, 2) != "\r\n") return hard("chunk data not followed by CRLF");
      pos += 2;
    }
    // Trailer section (RFC 9112 §7.1.2), then the final CRLF.
    std::vector<std::pair<std::string, std::string>> trailers;
    while (true) {
      std::string_view line;
      std::string why;
      switch (read_line(s, pos, line, why)) {
        case Line::kIncomplete: return incomplete();
        case Line::kBad: return hard("trailer section: " + why);
        case Line::kOk: break;
      }
      if (line.empty()) break;
      if (!field(line, &trailers)) return r;
    }
    r.end = pos;
    r.verdict = Verdict::kOk;
    return r;
  }
};

}  // namespace

const char* name(Verdict v) {
  switch (v) {
    case Verdict::kOk: return "ok";
    case Verdict::kIncomplete: return "incomplete";
    case Verdict::kSoftReject: return "soft-reject";
    case Verdict::kHardReject: return "hard-reject";
  }
  return "?";
}

Request parse_request(std::string_view s) {
  Reader reader;
  reader.s = s;
  reader.r.verdict = Verdict::kOk;
  const auto done = [&reader]() -> Request& {
    reader.r.soft_reason = reader.soft_why;
    return reader.r;
  };
  if (reader.request_line().verdict != Verdict::kOk) return done();
  if (reader.headers().verdict != Verdict::kOk || !reader.r.head_complete) return done();
  if (reader.framing().verdict != Verdict::kOk) return done();
  reader.r.in_body = true;
  reader.body();
  reader.r.soft_reason = reader.soft_why;
  if (reader.r.verdict == Verdict::kOk && !reader.soft_why.empty()) {
    reader.r.verdict = Verdict::kSoftReject;
    reader.r.why = reader.soft_why;
  }
  return reader.r;
}

}  // namespace limpet::fuzz::ref
