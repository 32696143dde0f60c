// Incremental HTTP/1.1 parser for requests and responses over llhttp in strict mode (no lenient
// flags: conflicting Content-Length/Transfer-Encoding, bad chunking and bare LF are errors).
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
  void resume();  // after kPaused
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

  // For kError: the status to answer a client with (400, 413, 414, 431) and a short reason.
  int error_status() const { return error_status_; }
  const std::string& error_reason() const { return error_reason_; }

 private:
  // Head under construction: bytes accumulate in the head's storage, spans as offsets until
  // complete (the storage may reallocate while it grows).
  struct Span {
    size_t offset = 0;
    size_t length = 0;
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
  int append_head(std::string_view data, Span* span, bool start_line);
  int on_header_field(std::string_view data);
  int on_header_value(std::string_view data);
  int on_headers_complete();
  static bool never_has_body(int status);
  int fail(int status, std::string reason);
  Outcome outcome(llhttp_errno_t err, const char* data, size_t len);
  void finalize_head(HeadBase& head);
  HeadBase& head() { return kind_ == Kind::kRequest ? static_cast<HeadBase&>(*request_) : *response_; }

  Kind kind_;
  ParserLimits limits_;
  ParserDelegate* delegate_;
  llhttp_settings_t settings_{};
  llhttp_t parser_{};

  Span method_, target_, reason_;
  std::vector<std::pair<Span, Span>> header_spans_;
  bool in_field_ = false;

  std::unique_ptr<RequestHead> request_;
  std::unique_ptr<ResponseHead> response_;
  bool in_message_ = false;
  bool head_done_ = false;
  bool no_body_response_ = false;
  int error_status_ = 400;
  std::string error_reason_;
};

}  // namespace limpet::http
