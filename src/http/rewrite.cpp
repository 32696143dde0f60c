#include "limpet/http/rewrite.hpp"

#include <charconv>

namespace limpet::http {
namespace {

void append_header(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

void append_number(std::string* out, uint64_t n) {
  char buf[24];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  (void)ec;
  out->append(buf, end);
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

bool is_always_hop_by_hop(std::string_view name) {
  static constexpr std::string_view kAlways[] = {"connection", "keep-alive", "te", "trailer",
                                                 "transfer-encoding", "upgrade"};
  for (auto h : kAlways) {
    if (iequals(name, h)) return true;
  }
  return starts_with_ci(name, "proxy-");
}

// The tokens of a head's Connection header(s), read in place: joining them into a string would
// allocate for every head with a long Connection header.
class ConnectionTokens {
 public:
  explicit ConnectionTokens(const HeadBase& head) : head_(head) {
    for (const auto& h : head.headers) present_ = present_ || iequals(h.name, "connection");
  }
  bool names(std::string_view header_name) const {
    if (!present_) return false;
    for (const auto& h : head_.headers) {
      if (iequals(h.name, "connection") && has_token(h.value, header_name)) return true;
    }
    return false;
  }
  bool hop_by_hop(std::string_view header_name) const {
    return is_always_hop_by_hop(header_name) || names(header_name);
  }

 private:
  const HeadBase& head_;
  bool present_ = false;
};

}  // namespace

bool is_hop_by_hop(std::string_view name, std::string_view connection_header) {
  return is_always_hop_by_hop(name) || has_token(connection_header, name);
}

void build_request_head(const RequestHead& head, const ForwardInfo& info, std::string* out) {
  out->clear();
  out->reserve(head.storage.size() + 160);
  out->append(head.method);
  out->push_back(' ');
  out->append(head.target);
  out->append(" HTTP/1.1\r\n");

  const ConnectionTokens connection(head);
  std::string_view host;
  std::string_view prior_xff;
  for (const auto& h : head.headers) {
    if (connection.hop_by_hop(h.name)) continue;
    if (iequals(h.name, "x-forwarded-for")) {
      prior_xff = h.value;  // extended below, never duplicated
      continue;
    }
    if (iequals(h.name, "x-forwarded-proto") || iequals(h.name, "x-forwarded-host") ||
        (info.add_forwarded && iequals(h.name, "forwarded"))) {
      continue;  // replaced by ours: the client does not get to choose them
    }
    if (iequals(h.name, "host")) host = h.value;
    append_header(out, h.name, h.value);
  }

  out->append("X-Forwarded-For: ");
  if (!prior_xff.empty()) {
    out->append(prior_xff);
    out->append(", ");
  }
  out->append(info.client_ip);
  out->append("\r\n");
  append_header(out, "X-Forwarded-Proto", info.tls ? "https" : "http");
  if (!host.empty()) append_header(out, "X-Forwarded-Host", host);
  if (info.add_forwarded) {
    bool v6 = info.client_ip.find(':') != std::string_view::npos;
    out->append("Forwarded: for=");
    out->append(v6 ? "\"[" : "");
    out->append(info.client_ip);
    out->append(v6 ? "]\"" : "");
    out->append(";proto=");
    out->append(info.tls ? "https" : "http");
    if (!host.empty()) {
      out->append(";host=\"");
      out->append(host);
      out->append("\"");
    }
    out->append("\r\n");
  }
  if (head.chunked) append_header(out, "Transfer-Encoding", "chunked");
  if (head.websocket) {
    append_header(out, "Connection", "Upgrade");
    append_header(out, "Upgrade", "websocket");
  }
  out->append("\r\n");
}

void build_response_head(const ResponseHead& head, const ResponseHeadOptions& options,
                         std::string* out) {
  out->clear();
  out->reserve(head.storage.size() + 96);
  out->append("HTTP/1.1 ");
  append_number(out, static_cast<uint64_t>(head.status));
  out->push_back(' ');
  out->append(head.reason);
  out->append("\r\n");
  const ConnectionTokens connection(head);
  for (const auto& h : head.headers) {
    if (connection.hop_by_hop(h.name)) continue;
    // Content-Length is only meaningful with length framing (HEAD and 304 keep theirs).
    if (options.framing == BodyFraming::kChunked && iequals(h.name, "content-length")) continue;
    append_header(out, h.name, h.value);
  }
  if (!options.set_cookie.empty()) append_header(out, "Set-Cookie", options.set_cookie);
  if (options.framing == BodyFraming::kChunked) append_header(out, "Transfer-Encoding", "chunked");
  if (options.upgrade) {
    // The first Upgrade that names a protocol: an empty one would hide the upgrade from the
    // client's parser (a 101 it then reads as HTTP). None: websocket, all limpet tunnels.
    std::string_view upgrade = "websocket";
    for (const auto& h : head.headers) {
      if (iequals(h.name, "upgrade") && !trim(h.value).empty()) {
        upgrade = h.value;
        break;
      }
    }
    append_header(out, "Connection", "Upgrade");
    append_header(out, "Upgrade", upgrade);
  } else if (options.close) {
    append_header(out, "Connection", "close");
  }
  out->append("\r\n");
}

const char* status_reason(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

std::string simple_response(int status, bool close) {
  std::string body = status_reason(status);
  body += '\n';
  std::string out = "HTTP/1.1 ";
  append_number(&out, static_cast<uint64_t>(status));
  out += ' ';
  out += status_reason(status);
  out += "\r\nContent-Type: text/plain\r\nContent-Length: ";
  append_number(&out, body.size());
  out += "\r\nCache-Control: no-store\r\n";
  if (close) out += "Connection: close\r\n";
  out += "\r\n";
  out += body;
  return out;
}

}  // namespace limpet::http
