// The downstream HTTP/1 side of a client connection: the request parser (heads split anywhere,
// pipelined requests one at a time, their bytes held meanwhile), Host and size checks with
// 400/408/413/414/431, keep-alive, the response framing for the client (length, chunked,
// until-close), the access log, and one Exchange at a time. A 101 turns the connection into a
// tunnel and this object goes away whole. Owning worker only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "limpet/http/parser.hpp"
#include "limpet/http/rewrite.hpp"
#include "limpet/proxy/client_session.hpp"
#include "limpet/proxy/deadline.hpp"
#include "limpet/proxy/exchange.hpp"
#include "limpet/proxy/relay.hpp"

namespace limpet::proxy {

class ClientConnection;

class HttpSession final : public ClientSession, public ExchangeOwner, private http::ParserDelegate {
 public:
  explicit HttpSession(ClientConnection& conn);
  ~HttpSession() override;
  HttpSession(const HttpSession&) = delete;
  HttpSession& operator=(const HttpSession&) = delete;

  // ClientSession
  void on_client_data(std::string_view data) override;
  void on_client_end(int status) override;
  void on_client_writable() override;
  DeadlineSpec deadline() const override;
  void on_deadline(Deadline kind) override;
  void begin_shutdown() override;  // busy: close after the current response
  void abort() override { exchange_.abort(); }

  // ExchangeOwner
  void on_interim_response(const http::ResponseHead& head) override;
  void on_response_head(const http::ResponseHead& head, std::string_view set_cookie) override;
  void on_response_body(std::string_view data) override;
  void flush_response() override;
  void on_response_end() override;
  void on_exchange_failed(int status) override;
  void on_upgraded(UpgradeHandoff handoff) override;
  net::ByteStream* response_sink() override;
  void on_exchange_progress(bool activity) override;

 private:
  enum class Phase : uint8_t {
    kReadingHead,  // between requests, or a head in progress
    kExchange,     // a request is being proxied
    kLingering,    // an error answer was sent: input is drained and discarded until close
  };

  // http::ParserDelegate, for the request parser.
  bool on_head() override;
  bool on_body(std::string_view data) override;
  void on_message_end() override;

  void parse(std::string_view data);
  void on_parser_stopped(http::Parser::State state, std::string_view rest);
  void next_request();
  void update_hold();
  bool answer_readiness();
  // An answer of limpet's own (an error, or the readiness probe's), then a lingering close.
  void respond_error(int status);
  void linger();
  bool client_sends_nothing_more() const;
  void log_access(int status);
  void count_response(int status);
  void write_response(std::string_view tail);

  ClientConnection& conn_;
  http::Parser parser_;
  Relay client_in_;  // client → upstream; the only decider of reading the client
  Exchange exchange_;
  std::string pending_in_;  // client bytes not yet parsed (a pipelined request, early tunnel bytes)
  // The response head for the client waits here until the first body bytes (or the end of the
  // bytes at hand) so that both leave in one write.
  std::string response_head_;
  const http::RequestHead* request_ = nullptr;  // parser_'s head, during an exchange
  uint64_t request_started_ns_ = 0;
  uint64_t bytes_before_ = 0;  // client bytes sent when the request began
  uint64_t body_bytes_ = 0;
  int status_ = 0;  // of the final response head
  http::BodyFraming framing_ = http::BodyFraming::kNone;
  Phase phase_ = Phase::kReadingHead;
  bool parser_paused_ = false;
  bool head_pending_ = false;     // response_head_ not written yet
  bool response_started_ = false; // a byte of the final response reached the client's queue
  bool close_after_response_ = false;
  bool client_ended_ = false;
  bool served_one_ = false;  // a response was completed: between requests is keep-alive now
};

}  // namespace limpet::proxy
