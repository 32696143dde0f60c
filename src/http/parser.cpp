#include "limpet/http/parser.hpp"

#include <charconv>

namespace limpet::http {
namespace {

Parser* self(llhttp_t* p) { return static_cast<Parser*>(p->data); }

// Per-header overhead in the raw head (": " and CRLF) for the size limit.
constexpr size_t kHeaderLineOverhead = 4;

bool is_valid_websocket_upgrade(const RequestHead& head) {
  auto upgrade = head.header("upgrade");
  auto key = head.header("sec-websocket-key");
  auto version = head.header("sec-websocket-version");
  return head.method == "GET" && upgrade && iequals(*upgrade, "websocket") && key && !key->empty() &&
         version && *version == "13";
}

}  // namespace

Parser::Parser(Kind kind, ParserLimits limits, ParserDelegate* delegate)
    : kind_(kind), limits_(limits), delegate_(delegate) {
  llhttp_settings_init(&settings_);
  settings_.on_message_begin = on_message_begin_cb;
  settings_.on_url = on_url_cb;
  settings_.on_status = on_status_cb;
  settings_.on_method = on_method_cb;
  settings_.on_header_field = on_header_field_cb;
  settings_.on_header_value = on_header_value_cb;
  settings_.on_header_field_complete = on_header_field_complete_cb;
  settings_.on_headers_complete = on_headers_complete_cb;
  settings_.on_body = on_body_cb;
  settings_.on_message_complete = on_message_complete_cb;
  llhttp_init(&parser_, kind == Kind::kRequest ? HTTP_REQUEST : HTTP_RESPONSE, &settings_);
  parser_.data = this;
}

Parser::Outcome Parser::execute(std::string_view data) {
  llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  return outcome(err, data.data(), data.size());
}

Parser::Outcome Parser::finish() {
  llhttp_errno_t err = llhttp_finish(&parser_);
  if (err == HPE_OK && in_message_) {
    // EOF inside a message that needed a length or chunk terminator: truncated.
    return {State::kError, 0};
  }
  return outcome(err, nullptr, 0);
}

void Parser::resume() { llhttp_resume(&parser_); }

void Parser::reset() {
  llhttp_reset(&parser_);
  in_message_ = false;
  head_done_ = false;
  no_body_response_ = false;
  error_status_ = 400;
  error_reason_.clear();
}

void Parser::resume_after_upgrade() { llhttp_resume_after_upgrade(&parser_); }

Parser::Outcome Parser::outcome(llhttp_errno_t err, const char* data, size_t len) {
  switch (err) {
    case HPE_OK:
      return {State::kNeedMore, len};
    case HPE_PAUSED:
      return {State::kPaused, static_cast<size_t>(llhttp_get_error_pos(&parser_) - data)};
    case HPE_PAUSED_UPGRADE:
      return {State::kUpgrade, static_cast<size_t>(llhttp_get_error_pos(&parser_) - data)};
    default:
      if (error_reason_.empty()) {
        error_status_ = 400;
        error_reason_ = llhttp_get_error_reason(&parser_) ? llhttp_get_error_reason(&parser_)
                                                          : llhttp_errno_name(err);
      }
      return {State::kError, 0};
  }
}

int Parser::fail(int status, std::string reason) {
  error_status_ = status;
  error_reason_ = std::move(reason);
  return -1;
}

int Parser::on_message_begin_cb(llhttp_t* p) { return self(p)->on_message_begin(); }
int Parser::on_url_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->append_head({at, len}, &self(p)->target_, true);
}
int Parser::on_status_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->append_head({at, len}, &self(p)->reason_, true);
}
int Parser::on_method_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->append_head({at, len}, &self(p)->method_, true);
}
int Parser::on_header_field_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->on_header_field({at, len});
}
int Parser::on_header_value_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->on_header_value({at, len});
}
int Parser::on_header_field_complete_cb(llhttp_t* p) {
  self(p)->in_field_ = false;
  return 0;
}
int Parser::on_headers_complete_cb(llhttp_t* p) { return self(p)->on_headers_complete(); }
int Parser::on_body_cb(llhttp_t* p, const char* at, size_t len) {
  return self(p)->delegate_->on_body({at, len}) ? 0 : self(p)->fail(413, "body too large");
}
int Parser::on_message_complete_cb(llhttp_t* p) {
  Parser* parser = self(p);
  parser->in_message_ = false;
  parser->delegate_->on_message_end();
  // Upgrades stop by themselves with HPE_PAUSED_UPGRADE; everything else pauses so that the
  // next pipelined message waits for the current exchange to finish.
  return p->upgrade ? 0 : HPE_PAUSED;
}

int Parser::on_message_begin() {
  in_message_ = true;
  head_done_ = false;
  in_field_ = false;
  header_spans_.clear();
  method_ = target_ = reason_ = Span{};
  if (kind_ == Kind::kRequest) {
    if (request_) {
      request_->clear();
    } else {
      request_ = std::make_unique<RequestHead>();
    }
  } else if (response_) {
    response_->clear();
  } else {
    response_ = std::make_unique<ResponseHead>();
  }
  return 0;
}

// Appends one piece of the head to `span`. llhttp delivers the pieces of a head in order and
// finishes each one before the next starts, so every span is contiguous in the head's storage.
int Parser::append_head(std::string_view data, Span* span, bool start_line) {
  std::string& storage = head().storage;
  if (span->length == 0) span->offset = storage.size();
  storage.append(data);
  span->length += data.size();
  if (start_line && span->length > limits_.max_start_line) {
    return fail(kind_ == Kind::kRequest ? 414 : 502, "request line too long");
  }
  size_t head_size = storage.size() + header_spans_.size() * kHeaderLineOverhead;
  if (head_size > limits_.max_head) return fail(431, "request header fields too large");
  return 0;
}

int Parser::on_header_field(std::string_view data) {
  if (!in_field_) {
    in_field_ = true;
    header_spans_.emplace_back();
  }
  return append_head(data, &header_spans_.back().first, false);
}

int Parser::on_header_value(std::string_view data) {
  return append_head(data, &header_spans_.back().second, false);
}

void Parser::finalize_head(HeadBase& head) {
  auto view = [&head](Span s) { return std::string_view(head.storage).substr(s.offset, s.length); };
  head.headers.reserve(header_spans_.size());
  for (const auto& [name, value] : header_spans_) head.headers.push_back({view(name), view(value)});
  head.http_major = parser_.http_major;
  head.http_minor = parser_.http_minor;
  head.keep_alive = llhttp_should_keep_alive(&parser_) != 0;
  head.chunked = (parser_.flags & F_CHUNKED) != 0;
  if (parser_.flags & F_CONTENT_LENGTH) head.content_length = parser_.content_length;
  if (kind_ == Kind::kRequest) {
    auto& req = static_cast<RequestHead&>(head);
    req.method = view(method_);
    req.target = view(target_);
    size_t q = req.target.find('?');
    req.path = req.target.substr(0, q);
    req.query = q == std::string_view::npos ? std::string_view() : req.target.substr(q + 1);
    auto connection = req.header("connection");
    req.upgrade = parser_.upgrade && connection && has_token(*connection, "upgrade");
    req.websocket = req.upgrade && is_valid_websocket_upgrade(req);
  } else {
    auto& resp = static_cast<ResponseHead&>(head);
    resp.status = parser_.status_code;
    resp.reason = view(reason_);
  }
}

// RFC 9110 §6.4.1: a 1xx, 204 or 304 response ends at its head, whatever Content-Length or
// Transfer-Encoding it carries (a 304 legally repeats the representation's length). llhttp reads
// such a body; a proxy that did would forward bytes after a head that has none, or wait for a
// body that never comes. (101 is an upgrade: llhttp ends it at its head by itself.)
bool Parser::never_has_body(int status) {
  return (status >= 100 && status < 200 && status != 101) || status == 204 || status == 304;
}

int Parser::on_headers_complete() {
  head_done_ = true;
  if (kind_ == Kind::kRequest) {
    finalize_head(*request_);
  } else {
    finalize_head(*response_);
  }
  bool skip_body = delegate_->on_head();
  if (kind_ == Kind::kResponse && (skip_body || no_body_response_ || never_has_body(response_->status))) {
    return 1;
  }
  return 0;
}

}  // namespace limpet::http
