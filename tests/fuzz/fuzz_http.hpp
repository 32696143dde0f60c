// Drives limpet's http::Parser over a byte stream the way the proxy does (proxy/http_session.cpp
// for requests, proxy/exchange.cpp for responses): one message at a time, resume() after each,
// resume_after_upgrade() for an Upgrade that is not a WebSocket handshake, stop at a tunnel or an
// error. The stream may arrive in pieces (`cuts`: offsets where a read ends). Fuzz targets only.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "limpet/http/message.hpp"
#include "limpet/http/parser.hpp"

namespace limpet::fuzz {

struct ParsedMessage {
  std::unique_ptr<http::RequestHead> request;    // kRequest
  std::unique_ptr<http::ResponseHead> response;  // kResponse (a copy: the parser keeps its head)
  std::string body;                              // decoded body bytes
  bool complete = false;                         // on_message_end seen
  bool needs_eof = false;                        // until-close body (responses)
  size_t end = 0;                                // stream offset just after the message
};

struct StreamResult {
  std::vector<ParsedMessage> messages;  // the last one may be incomplete
  http::Parser::State last = http::Parser::State::kNeedMore;
  bool tunnel = false;    // a WebSocket upgrade (request) or 101 (response) ended the HTTP part
  size_t tunnel_at = 0;   // where tunnel bytes start
  int error_status = 0;   // kError
  std::string error_reason;

  // Everything but the heads' storage addresses, for comparing two feedings of the same bytes.
  std::string summary() const;
};

// Copies a response head into an owned object (views re-pointed into its own storage).
std::unique_ptr<http::ResponseHead> copy_response(const http::ResponseHead& h);
std::unique_ptr<http::RequestHead> copy_request(const http::RequestHead& h);

struct DriveOptions {
  http::ParserLimits limits{};
  bool head_request = false;  // responses: the request was HEAD (no body)
  bool eof = false;           // responses: the peer closes after the last byte (finish())
  size_t max_messages = 64;
};

// Parses `data`, delivered in reads that end at each of `cuts` (increasing, < data.size()).
StreamResult drive(http::Parser::Kind kind, std::string_view data, const std::vector<size_t>& cuts,
                   const DriveOptions& options = {});

// Cut lists: none, every byte, and `n` random cuts derived from the input.
std::vector<size_t> every_byte(size_t size);
std::vector<size_t> random_cuts(std::string_view data, size_t n, uint64_t salt);

// proxy/http_session.cpp's Host rule: exactly one Host header, or none on HTTP/1.0.
bool has_valid_host(const http::RequestHead& head);

}  // namespace limpet::fuzz
