// Incremental HTTP/1.1 parser for requests and responses over llhttp in strict mode (no lenient
// flags: conflicting Content-Length/Transfer-Encoding, bad chunking and bare LF are errors).
// For requests limpet adds what strict llhttp still lets through (doc/security.md): bare LF line
// ends and stray CR/LF in the head, obs-fold, empty field names, HTTP/0.9 and 2.0 request lines,
// CONNECT, Transfer-Encoding that is not exactly one chunked or on HTTP/1.0 are refused before
// the delegate sees the head; an absolute-form target is rewritten to origin-form.
// Builds an owned head (one head object reused for every message: no allocation per message once
// its buffers have grown), streams decoded body bytes to a delegate, and stops after each message
// so pipelined requests are handled one at a time. Owning worker only.
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "limpet/http/message.hpp"

namespace limpet::http {

class ParserDelegate {
 public:
  virtual ~ParserDelegate() = default;
  // The head is complete and available from Parser::request()/response().
  // Return true to skip the body (responses to HEAD).
  virtual bool on_head() = 0;
  // Decoded body bytes (chunk framing removed). Return false to stop with an error (e.g. 413).
  virtual bool on_body(std::string_view data) = 0;
  // The message is complete; the parser pauses right after it.
  virtual void on_message_end() = 0;
};

struct ParserLimits {
  size_t max_head = 16 * 1024;        // whole head
  size_t max_start_line = 8 * 1024;   // request target / status line
};

class Parser {
 public:
  enum class Kind { kRequest, kResponse };
  enum class State {
    kNeedMore,   // all input consumed, message not complete
    kPaused,     // a message ended; call resume() before feeding more
    kUpgrade,    // an upgrade/101 head ended; bytes after it are tunnel data
    kError,      // see error_status()/error_reason()
  };
  struct Outcome {
    State state;
    size_t consumed;  // bytes of the input that belong to the parsed message(s)
  };

  Parser(Kind kind, ParserLimits limits, ParserDelegate* delegate);
  Parser(const Parser&) = delete;
  Parser& operator=(const Parser&) = delete;

  Outcome execute(std::string_view data);
  // EOF from the peer: completes an until-close response body. Returns kError if the message was
  // cut short.
  Outcome finish();
  void resume();  // after kPaused, or after a kUpgrade that is not taken (the next message is HTTP)
  // Ready for a new connection (a parser kept for the next exchange), buffers kept.
  void reset();
  // A request with Upgrade that we decline to tunnel: keep parsing it as plain HTTP.
  void resume_after_upgrade();
  // Responses to HEAD have no body although they may carry Content-Length.
  void expect_no_body_response(bool no_body) { no_body_response_ = no_body; }

  bool message_in_progress() const { return in_message_; }
  bool in_head() const { return in_message_ && !head_done_; }
  Kind kind() const { return kind_; }
  // Body framing of the current message as sent: until-close responses need EOF.
  bool needs_eof() const { return llhttp_message_needs_eof(&parser_) != 0; }

  // The head of the current (or last) message; valid until the next message begins.
  const RequestHead& request() const { return *request_; }
  const ResponseHead& response() const { return *response_; }
  // Tests: keep a head beyond the next message (the parser then allocates a new one).
  std::unique_ptr<RequestHead> take_request() { return std::move(request_); }

  // For kError: the status to answer a client with (400, 413, 414, 431, 501, 505) and a short
  // reason.
  int error_status() const { return error_status_; }
  const std::string& error_reason() const { return error_reason_; }

 private:
  // Head under construction: bytes accumulate in the head's storage, spans as offsets until
  // complete (the storage may reallocate while it grows).
  struct Span {
    size_t offset = 0;
    size_t length = 0;
  };

  // Line ends in a request, checked on the raw bytes: the head from its first byte (and the
  // empty lines before it), in a chunked body the bytes between chunk data (chunk lines,
  // trailers, the empty line). Strict llhttp 8 still takes a bare LF for the line end after
  // the request line and for the empty line that ends a head or the trailers, skips stray CR and
  // LF before a request, and hands an obs-fold line over as one more piece of the value. Here a
  // line ends in CRLF and never starts with SP or HT (RFC 9112 §2.2, §5.2: refuse obs-fold).
  // Knows nothing of llhttp: it finds a section's end by itself, and the parser checks that it is
  // where llhttp ends it.
  class LineEnds {
   public:
    enum class Result { kOk, kSectionEnd, kBareLf, kBareCr, kObsFold };
    void expect_request_line() { start(Mode::kBeforeRequestLine); }
    void expect_chunked_body() { start(Mode::kChunked); }
    void expect_nothing() { mode_ = Mode::kOff; }  // no body, or a Content-Length one: not lines
    bool active() const { return mode_ != Mode::kOff; }
    // Bytes of lines. Stops after the empty line that ends a head or a trailer section
    // (kSectionEnd, *used = bytes up to and including its LF; then inactive).
    Result scan(std::string_view bytes, size_t* used);
    // Chunk data starts after the bytes scanned so far: content, not lines.
    Result chunk_data();
    static const char* describe(Result r);

   private:
    enum class Mode { kOff, kBeforeRequestLine, kHead, kChunked };
    void start(Mode mode);
    Mode mode_ = Mode::kBeforeRequestLine;
    bool prev_cr_ = false;     // the last byte was CR: only LF may follow
    bool line_start_ = false;  // right after a line's LF: SP or HT here is obs-fold
    bool line_empty_ = false;  // nothing but CR since that LF: its LF ends the section
  };

  static int on_message_begin_cb(llhttp_t* p);
  static int on_url_cb(llhttp_t* p, const char* at, size_t len);
  static int on_status_cb(llhttp_t* p, const char* at, size_t len);
  static int on_method_cb(llhttp_t* p, const char* at, size_t len);
  static int on_header_field_cb(llhttp_t* p, const char* at, size_t len);
  static int on_header_value_cb(llhttp_t* p, const char* at, size_t len);
  static int on_header_field_complete_cb(llhttp_t* p);
  static int on_headers_complete_cb(llhttp_t* p);
  static int on_body_cb(llhttp_t* p, const char* at, size_t len);
  static int on_message_complete_cb(llhttp_t* p);

  int on_message_begin();
  int scan_line_ends(const char* until, bool section_ends);
  int append_head(std::string_view data, Span* span, bool start_line);
  int on_header_field(std::string_view data);
  int on_header_value(std::string_view data);
  int on_headers_complete();
  int on_trailer_piece(size_t len);
  void expect_next_message();
  int normalize_absolute_form();
  static bool never_has_body(int status);
  int fail(int status, std::string reason);
  Outcome outcome(llhttp_errno_t err, const char* data, size_t len);
  void finalize_head(HeadBase& head);
  Span storage_span(std::string_view bytes);
  HeadBase& head() { return kind_ == Kind::kRequest ? static_cast<HeadBase&>(*request_) : *response_; }

  Kind kind_;
  ParserLimits limits_;
  ParserDelegate* delegate_;
  llhttp_settings_t settings_{};
  llhttp_t parser_{};

  Span method_, target_, reason_;
  std::vector<std::pair<Span, Span>> header_spans_;
  bool in_field_ = false;
  size_t trailer_bytes_ = 0;
  size_t trailer_name_length_ = 0;  // of the trailer field name being read

  // Requests only (responses: line_ends_ stays off).
  LineEnds line_ends_;
  const char* unscanned_ = nullptr;  // in the input of the current execute(): not yet scanned
  const char* input_end_ = nullptr;

  std::unique_ptr<RequestHead> request_;
  std::unique_ptr<ResponseHead> response_;
  bool in_message_ = false;
  bool head_done_ = false;
  bool no_body_response_ = false;
  int error_status_ = 400;
  std::string error_reason_;
};

}  // namespace limpet::http
