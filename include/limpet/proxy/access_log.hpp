// One access-log line per request (a tunnel's 101 among them) and one per tunnel closed: who,
// what, the answer, which backend was chosen and why (so a user can answer "why did this client
// land there"), and how a tunnel ended. Text or
// JSON; formatted into a buffer the worker reuses, written with one system call, no allocation
// once the buffer has grown. One per worker; owning worker only.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "limpet/http/message.hpp"

namespace limpet::proxy {

// The status logged for a request whose client closed before any answer (nginx's 499): never
// sent, only logged.
constexpr int kClientClosedRequest = 499;

struct AccessEntry {
  std::string_view client_ip;
  const http::RequestHead* request = nullptr;
  int status = 0;
  uint64_t bytes = 0;            // response bytes sent to the client
  uint64_t duration_ns = 0;      // request head parsed → now
  uint64_t upstream_time_ns = 0; // request handed to the backend → now; 0: never sent
  std::string_view upstream = "-";
  std::string_view backend = "-";
  std::string_view reason = "-";
};

// Who ended a WebSocket tunnel first (a Close frame, an EOF, a reset), and why.
enum class TunnelCloser : uint8_t { kNone, kClient, kBackend, kLimpet };
enum class TunnelCloseReason : uint8_t {
  kClosed,          // a side sent a Close frame or ended the connection
  kError,           // a side's connection failed (reset, TLS error)
  kIdle,            // tunnel_idle_timeout
  kDrain,           // a reload removed, or an operator drained, the backend (1012)
  kShutdown,        // limpet stops or hands over to an upgrade (1001)
  kTooBig,          // a message over max_message_size (1009)
  kProtocolError,   // a frame limpet could not delimit (1002)
};
const char* to_string(TunnelCloser by);
const char* to_string(TunnelCloseReason why);

// The line written when a tunnel's connections are both closed. "to_backend" counts what the
// client sent, "to_client" what the backend sent.
struct TunnelEntry {
  std::string_view client_ip;
  std::string_view upstream;
  std::string_view backend;
  std::string_view session_id;  // empty: a plain WebSocket, or a session that was never learned
  uint64_t duration_ms = 0;
  uint64_t bytes_to_backend = 0;
  uint64_t bytes_to_client = 0;
  uint64_t messages_to_backend = 0;
  uint64_t messages_to_client = 0;
  uint16_t close_code = 0;  // of the closer's Close frame; 0: none was sent
  TunnelCloser closed_by = TunnelCloser::kNone;
  TunnelCloseReason reason = TunnelCloseReason::kClosed;
};

class AccessLog {
 public:
  void set_json(bool json) { json_ = json; }
  void write(const AccessEntry& entry);
  void write(const TunnelEntry& entry);

 private:
  void format_text(const AccessEntry& e);
  void format_json(const AccessEntry& e);
  void format_text(const TunnelEntry& e);
  void format_json(const TunnelEntry& e);
  template <typename Entry>
  void emit(const Entry& e);
  std::string line_;
  bool json_ = false;
};

}  // namespace limpet::proxy
