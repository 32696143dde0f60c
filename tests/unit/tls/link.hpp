// Two TLS filters back to back in memory: what one side writes to the wire the other reads, in
// pieces of a chosen size. Test thread.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <string>

#include "limpet/tls/filter.hpp"

namespace limpet::tls::testing {

struct Side {
  std::unique_ptr<Filter> filter;
  std::string wire_out;  // written, not yet delivered to the other side
  std::string received;  // plaintext delivered to this side
  bool ok = true;        // false once a call failed (a stream would close)
  Counters counters;
  size_t calls = 0;
};

class Link {
 public:
  // Starts both filters.
  void start();
  // Delivers wire bytes both ways, at most `piece` bytes per on_wire call, until both are quiet.
  void pump(size_t piece = SIZE_MAX);
  void send(Side& from, const std::string& plain);
  bool handshaken() const { return client.filter->handshake_complete() && server.filter->handshake_complete(); }

  Side client;
  Side server;
};

// A filter over an SSL made by the test itself (an outsider's client or server); `ssl_out` keeps
// a pointer for inspection while the filter owns it.
std::unique_ptr<Filter> raw_filter(SSL_CTX* ctx, Filter::Role role, Counters* counters, SSL** ssl_out = nullptr);

}  // namespace limpet::tls::testing
