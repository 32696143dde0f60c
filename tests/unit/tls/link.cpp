#include "link.hpp"

#include <algorithm>

namespace limpet::tls::testing {
namespace {

void deliver(Side& from, Side& to, size_t piece) {
  std::string wire;
  wire.swap(from.wire_out);
  for (size_t at = 0; at < wire.size() && to.ok; at += piece) {
    std::string plain;
    ++to.calls;
    to.ok = to.filter->on_wire(std::string_view(wire).substr(at, std::min(piece, wire.size() - at)), &plain,
                               &to.wire_out);
    to.received += plain;
  }
}

}  // namespace

void Link::start() {
  client.ok = client.filter->start(&client.wire_out);
  server.ok = server.filter->start(&server.wire_out);
}

void Link::pump(size_t piece) {
  while ((!client.wire_out.empty() && server.ok) || (!server.wire_out.empty() && client.ok)) {
    if (server.ok) deliver(client, server, piece);
    if (client.ok) deliver(server, client, piece);
  }
}

void Link::send(Side& from, const std::string& plain) {
  from.ok = from.filter->on_plain(plain, &from.wire_out) && from.ok;
}

std::unique_ptr<Filter> raw_filter(SSL_CTX* ctx, Filter::Role role, Counters* counters, SSL** ssl_out) {
  SSL* ssl = SSL_new(ctx);
  if (ssl_out != nullptr) *ssl_out = ssl;
  return std::make_unique<Filter>(ssl, role, nullptr, counters, role == Filter::Role::kServer ? "raw server" : "raw client");
}

}  // namespace limpet::tls::testing
