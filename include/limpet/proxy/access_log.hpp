// One access-log line per request (and one per tunnel opened): who, what, the answer, and which
// backend was chosen and why, so a user can answer "why did this client land there". Text or
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

class AccessLog {
 public:
  void set_json(bool json) { json_ = json; }
  void write(const AccessEntry& entry);

 private:
  void format_text(const AccessEntry& e);
  void format_json(const AccessEntry& e);
  std::string line_;
  bool json_ = false;
};

}  // namespace limpet::proxy
