#include "limpet/http/parser.hpp"

#include <charconv>
#include <cstring>

#include "limpet/http/request_checks.hpp"

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
  expect_next_message();
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
  unscanned_ = data.data();
  input_end_ = data.data() + data.size();
  llhttp_errno_t err = llhttp_execute(&parser_, data.data(), data.size());
  // llhttp took every byte and is inside a head or chunked body: its lines go on in the next read.
  if (err == HPE_OK && line_ends_.active() && scan_line_ends(input_end_, false) != 0) return {State::kError, 0};
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

void Parser::resume() {
  // After an upgrade that was not taken (refused by the backend), the same connection goes on
  // in HTTP.
  if (llhttp_get_errno(&parser_) == HPE_PAUSED_UPGRADE) {
    llhttp_resume_after_upgrade(&parser_);
  } else {
    llhttp_resume(&parser_);
  }
}

void Parser::reset() {
  llhttp_reset(&parser_);
  expect_next_message();
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

void Parser::expect_next_message() {
  // Responses come from the backends limpet is configured for; the checks are for the client edge.
  if (kind_ == Kind::kRequest) {
    line_ends_.expect_request_line();
  } else {
    line_ends_.expect_nothing();
  }
}

// Scans the input from unscanned_ to `until`. With `section_ends`, llhttp has just ended a head
// or a trailer section at or before `until`: the scan must end it there too. Without, it must not
// (llhttp would have ended it).
int Parser::scan_line_ends(const char* until, bool section_ends) {
  size_t used = 0;
  const auto result = line_ends_.scan({unscanned_, static_cast<size_t>(until - unscanned_)}, &used);
  unscanned_ += used;
  switch (result) {
    case LineEnds::Result::kOk:
      return section_ends ? fail(400, "the head or trailers end where llhttp reads no end") : 0;
    case LineEnds::Result::kSectionEnd:
      return section_ends ? 0 : fail(400, "an empty line where llhttp reads none");
    default:
      return fail(400, LineEnds::describe(result));
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
  Parser* parser = self(p);
  parser->in_field_ = false;
  // A head's empty names are refused with the head (request_checks); a trailer's here.
  if (parser->head_done_ && parser->trailer_name_length_ == 0) return parser->fail(400, "trailer field with an empty name");
  parser->trailer_name_length_ = 0;
  return 0;
}
int Parser::on_headers_complete_cb(llhttp_t* p) { return self(p)->on_headers_complete(); }
int Parser::on_body_cb(llhttp_t* p, const char* at, size_t len) {
  Parser* parser = self(p);
  if (parser->line_ends_.active()) {  // chunk data of a request: the chunk lines before it are lines
    if (int rc = parser->scan_line_ends(at, false); rc != 0) return rc;
    if (auto r = parser->line_ends_.chunk_data(); r != LineEnds::Result::kOk) return parser->fail(400, LineEnds::describe(r));
    parser->unscanned_ = at + len;
  }
  return parser->delegate_->on_body({at, len}) ? 0 : parser->fail(413, "body too large");
}
int Parser::on_message_complete_cb(llhttp_t* p) {
  Parser* parser = self(p);
  // The empty line after a request's last chunk (and trailers) ends it: llhttp takes a bare LF.
  if (parser->line_ends_.active() && parser->scan_line_ends(parser->input_end_, true) != 0) return -1;
  parser->expect_next_message();
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
  trailer_bytes_ = 0;
  trailer_name_length_ = 0;
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

// Trailer fields (after a chunked body) are dropped: the body goes on re-chunked without them.
// They must not reach the head's storage, which the finished head's views point into.
int Parser::on_trailer_piece(size_t len) {
  trailer_bytes_ += len;
  return trailer_bytes_ > limits_.max_head ? fail(431, "trailer fields too large") : 0;
}

int Parser::on_header_field(std::string_view data) {
  if (head_done_) {
    trailer_name_length_ += data.size();
    return on_trailer_piece(data.size());
  }
  if (!in_field_) {
    in_field_ = true;
    header_spans_.emplace_back();
  }
  return append_head(data, &header_spans_.back().first, false);
}

int Parser::on_header_value(std::string_view data) {
  if (head_done_) return on_trailer_piece(data.size());
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

Parser::Span Parser::storage_span(std::string_view bytes) {
  std::string& storage = head().storage;
  const Span span{storage.size(), bytes.size()};
  storage.append(bytes);
  return span;
}

// RFC 9112 §3.2.2: to the client limpet is the origin server, which takes the host of an
// absolute-form target and ignores Host. limpet puts that host into Host and sends the target on
// in origin-form, so that the backend, the routing (path, sticky keys) and X-Forwarded-Host all
// read one host, never two. Works on the spans: the views are made afterwards.
int Parser::normalize_absolute_form() {
  const std::string_view target = std::string_view(request_->storage).substr(target_.offset, target_.length);
  std::optional<Refusal> refusal;
  const auto form = parse_absolute_form(target, &refusal);
  if (refusal) return fail(refusal->status, std::string(refusal->reason));
  if (!form) return 0;
  const auto offset_of = [&](std::string_view part) { return target_.offset + (part.data() - target.data()); };
  const Span authority{offset_of(form->authority), form->authority.size()};
  if (form->path.starts_with('/')) {
    target_ = Span{offset_of(form->path), form->path.size()};
  } else {
    // "http://a" or "http://a?q": origin-form starts with "/". (Copied first: appending to the
    // storage may move it, and the views into it with it.)
    const std::string origin_form = "/" + std::string(form->path);
    target_ = storage_span(origin_form);
  }
  bool has_host = false;
  for (auto& [name, value] : header_spans_) {
    if (iequals(std::string_view(request_->storage).substr(name.offset, name.length), "host")) {
      value = authority;
      has_host = true;
    }
  }
  if (!has_host) header_spans_.emplace_back(storage_span("Host"), authority);  // HTTP/1.0 may omit it
  return 0;
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
    // Everything limpet refuses is refused here, before the delegate sees the head: nothing of
    // such a request goes to a backend.
    if (int rc = scan_line_ends(input_end_, true); rc != 0) return rc;
    if (parser_.method != HTTP_CONNECT) {  // authority-form: refused below
      if (int rc = normalize_absolute_form(); rc != 0) return rc;
    }
    finalize_head(*request_);
    if (auto refusal = refuse_request_head(*request_)) return fail(refusal->status, std::string(refusal->reason));
    if (request_->chunked) line_ends_.expect_chunked_body();
  } else {
    finalize_head(*response_);
  }
  bool skip_body = delegate_->on_head();
  if (kind_ == Kind::kResponse && (skip_body || no_body_response_ || never_has_body(response_->status))) {
    return 1;
  }
  return 0;
}

void Parser::LineEnds::start(Mode mode) {
  mode_ = mode;
  prev_cr_ = false;
  line_start_ = mode == Mode::kChunked;  // a chunk line starts the body
  line_empty_ = false;                   // an empty line right there ends nothing
}

Parser::LineEnds::Result Parser::LineEnds::scan(std::string_view bytes, size_t* used) {
  const char* const begin = bytes.data();
  const char* const end = begin + bytes.size();
  const char* p = begin;
  Result result = Result::kOk;
  // The state in locals for the loop, written back once.
  Mode mode = mode_;
  bool prev_cr = prev_cr_;
  bool line_start = line_start_;
  bool line_empty = line_empty_;
  while (p < end && mode != Mode::kOff) {
    const char c = *p;
    if (prev_cr) {
      if (c != '\n') {
        result = Result::kBareCr;
        break;
      }
      prev_cr = false;
      ++p;
      if (mode == Mode::kBeforeRequestLine) continue;  // RFC 9112 §2.2: ignored before a request
      if (line_empty) {
        mode = Mode::kOff;
        result = Result::kSectionEnd;
        break;
      }
      line_start = line_empty = true;
      continue;
    }
    if (c == '\r') {
      prev_cr = true;
      ++p;
      continue;
    }
    if (c == '\n') {
      result = Result::kBareLf;
      break;
    }
    if (mode == Mode::kBeforeRequestLine) {
      mode = Mode::kHead;  // the request line's first byte
    } else if (line_start && (c == ' ' || c == '\t')) {
      result = Result::kObsFold;
      break;
    }
    line_start = line_empty = false;
    // The rest of the line is content: on to its next CR (or a bare LF) at memchr speed.
    const auto* lf = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
    if (lf == nullptr) lf = end;
    const auto* cr = static_cast<const char*>(std::memchr(p, '\r', static_cast<size_t>(lf - p)));
    p = cr != nullptr ? cr : lf;
  }
  mode_ = mode;
  prev_cr_ = prev_cr;
  line_start_ = line_start;
  line_empty_ = line_empty;
  *used = result == Result::kSectionEnd ? static_cast<size_t>(p - begin) : bytes.size();
  return result;
}

Parser::LineEnds::Result Parser::LineEnds::chunk_data() {
  if (prev_cr_) return Result::kBareCr;
  line_start_ = line_empty_ = false;
  return Result::kOk;
}

const char* Parser::LineEnds::describe(Result r) {
  switch (r) {
    case Result::kBareLf: return "bare LF as a line end";
    case Result::kBareCr: return "bare CR";
    case Result::kObsFold: return "obs-fold (a field line starting with whitespace)";
    case Result::kOk:
    case Result::kSectionEnd: break;
  }
  return "line ends";
}

}  // namespace limpet::http
