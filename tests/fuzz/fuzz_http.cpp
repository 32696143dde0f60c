#include "fuzz_http.hpp"

#include <algorithm>

namespace limpet::fuzz {
namespace {

std::string_view remap(std::string_view v, const std::string& from, const std::string& to) {
  if (v.empty()) return {};
  const auto* begin = from.data();
  FUZZ_CHECK(v.data() >= begin && v.data() + v.size() <= begin + from.size(),
             "a parsed head's view points outside its storage");
  return std::string_view(to).substr(static_cast<size_t>(v.data() - begin), v.size());
}

void copy_base(const http::HeadBase& from, http::HeadBase& to) {
  to.storage = from.storage;
  to.headers.clear();
  for (const auto& h : from.headers) {
    to.headers.push_back({remap(h.name, from.storage, to.storage), remap(h.value, from.storage, to.storage)});
  }
  to.http_major = from.http_major;
  to.http_minor = from.http_minor;
  to.keep_alive = from.keep_alive;
  to.chunked = from.chunked;
  to.content_length = from.content_length;
}

void append_head_summary(std::string& out, const http::HeadBase& h) {
  out += " v" + std::to_string(h.http_major) + "." + std::to_string(h.http_minor);
  out += h.keep_alive ? " ka" : " close";
  out += h.chunked ? " chunked" : "";
  if (h.content_length) out += " cl=" + std::to_string(*h.content_length);
  for (const auto& x : h.headers) {
    out += " [";
    out += x.name;
    out += "=";
    out += x.value;
    out += "]";
  }
}

}  // namespace

std::unique_ptr<http::ResponseHead> copy_response(const http::ResponseHead& h) {
  auto out = std::make_unique<http::ResponseHead>();
  copy_base(h, *out);
  out->status = h.status;
  out->reason = remap(h.reason, h.storage, out->storage);
  return out;
}

std::unique_ptr<http::RequestHead> copy_request(const http::RequestHead& h) {
  auto out = std::make_unique<http::RequestHead>();
  copy_base(h, *out);
  out->method = remap(h.method, h.storage, out->storage);
  out->target = remap(h.target, h.storage, out->storage);
  out->path = remap(h.path, h.storage, out->storage);
  out->query = remap(h.query, h.storage, out->storage);
  out->upgrade = h.upgrade;
  out->websocket = h.websocket;
  return out;
}

std::string StreamResult::summary() const {
  std::string out;
  for (const auto& m : messages) {
    out += "{";
    if (m.request) {
      out += std::string(m.request->method) + " " + std::string(m.request->target);
      out += m.request->upgrade ? " upgrade" : "";
      out += m.request->websocket ? " websocket" : "";
      append_head_summary(out, *m.request);
    }
    if (m.response) {
      out += std::to_string(m.response->status) + " " + std::string(m.response->reason);
      append_head_summary(out, *m.response);
    }
    out += " body=" + escape(m.body, 64) + "/" + std::to_string(m.body.size());
    out += m.complete ? " complete" : " partial";
    out += m.needs_eof ? " eof" : "";
    out += " end=" + std::to_string(m.end) + "}\n";
  }
  out += "last=" + std::to_string(static_cast<int>(last));
  if (tunnel) out += " tunnel@" + std::to_string(tunnel_at);
  if (error_status != 0) out += " error " + std::to_string(error_status) + " " + error_reason;
  return out;
}

StreamResult drive(http::Parser::Kind kind, std::string_view data, const std::vector<size_t>& cuts,
                   const DriveOptions& options) {
  struct Delegate : http::ParserDelegate {
    http::Parser* parser = nullptr;
    StreamResult* result = nullptr;
    bool on_head() override {
      ParsedMessage& m = result->messages.emplace_back();
      if (parser->kind() == http::Parser::Kind::kRequest) {
        m.request = copy_request(parser->request());
      } else {
        m.response = copy_response(parser->response());
        m.needs_eof = parser->needs_eof();
      }
      return false;
    }
    bool on_body(std::string_view d) override {
      FUZZ_CHECK(!result->messages.empty() && !result->messages.back().complete, "body outside a message");
      result->messages.back().body.append(d);
      return true;
    }
    void on_message_end() override {
      FUZZ_CHECK(!result->messages.empty() && !result->messages.back().complete, "message end without a head");
      result->messages.back().complete = true;
    }
  };

  StreamResult result;
  Delegate delegate;
  http::Parser parser(kind, options.limits, &delegate);
  delegate.parser = &parser;
  delegate.result = &result;
  if (kind == http::Parser::Kind::kResponse) parser.expect_no_body_response(options.head_request);

  std::string pending;
  size_t pending_base = 0;  // stream offset of pending[0]
  size_t prev = 0;
  std::vector<size_t> ends = cuts;
  ends.push_back(data.size());
  for (size_t end : ends) {
    FUZZ_CHECK(end >= prev && end <= data.size(), "bad cut list");
    pending.append(data.substr(prev, end - prev));
    prev = end;
    while (!pending.empty()) {
      const auto out = parser.execute(pending);
      result.last = out.state;
      switch (out.state) {
        case http::Parser::State::kNeedMore:
          FUZZ_CHECK(out.consumed == pending.size(), "kNeedMore must consume everything");
          pending_base += pending.size();
          pending.clear();
          break;
        case http::Parser::State::kPaused:
        case http::Parser::State::kUpgrade: {
          FUZZ_CHECK(out.consumed > 0 && out.consumed <= pending.size(),
                     "a message ended on zero bytes or past the input: consumed " + std::to_string(out.consumed));
          FUZZ_CHECK(!result.messages.empty() && result.messages.back().complete,
                     "the parser stopped without a complete message");
          pending_base += out.consumed;
          pending.erase(0, out.consumed);
          result.messages.back().end = pending_base;
          if (out.state == http::Parser::State::kUpgrade) {
            const bool websocket = kind == http::Parser::Kind::kRequest && result.messages.back().request->websocket;
            if (kind == http::Parser::Kind::kResponse || websocket) {
              result.tunnel = true;
              result.tunnel_at = pending_base;
              return result;
            }
            parser.resume_after_upgrade();  // http_session: an Upgrade we do not tunnel
          } else {
            parser.resume();
          }
          if (result.messages.size() >= options.max_messages) return result;
          break;
        }
        case http::Parser::State::kError:
          result.error_status = parser.error_status();
          result.error_reason = parser.error_reason();
          return result;
      }
    }
  }
  if (options.eof && kind == http::Parser::Kind::kResponse && parser.message_in_progress()) {
    // exchange.cpp: finish() once the head is in and the body runs until close; anything else
    // cut short is a truncated response (502), left here as an incomplete message.
    if (!parser.in_head() && parser.needs_eof()) {
      const auto out = parser.finish();
      result.last = out.state;
      if (out.state == http::Parser::State::kError) {
        result.error_status = parser.error_status();
        result.error_reason = "finish: " + parser.error_reason();
      } else {
        FUZZ_CHECK(!result.messages.empty() && result.messages.back().complete,
                   "finish() ended an until-close body without a message end");
        result.messages.back().end = data.size();
      }
    }
  }
  return result;
}

std::vector<size_t> every_byte(size_t size) {
  std::vector<size_t> cuts;
  for (size_t i = 1; i < size; ++i) cuts.push_back(i);
  return cuts;
}

std::vector<size_t> random_cuts(std::string_view data, size_t n, uint64_t salt) {
  std::vector<size_t> cuts;
  if (data.size() < 2) return cuts;
  Rng rng(data);
  for (uint64_t i = 0; i < salt; ++i) rng.next();
  for (size_t i = 0; i < n; ++i) cuts.push_back(1 + rng.below(data.size() - 1));
  std::sort(cuts.begin(), cuts.end());
  cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
  return cuts;
}

bool has_valid_host(const http::RequestHead& head) {
  int hosts = 0;
  for (const auto& h : head.headers) hosts += http::iequals(h.name, "host") ? 1 : 0;
  return hosts == 1 || (hosts == 0 && head.http_minor == 0);
}

}  // namespace limpet::fuzz
