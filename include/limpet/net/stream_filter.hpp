// A byte transformation between a socket and the code above it: TLS implements it (tls/), so the
// proxy, tunnel and stickiness code see plaintext and never know whether a connection is
// encrypted. Owned by one Stream; owning worker only.
#pragma once

#include <string>
#include <string_view>

namespace limpet::net {

class StreamFilter {
 public:
  virtual ~StreamFilter() = default;
  // The socket is connected (client side) or accepted (server side). A client filter appends its
  // first flight (ClientHello) to *wire_out.
  virtual bool start(std::string* wire_out) = 0;
  // Bytes read from the socket: decrypted application bytes go to *plain, bytes owed to the peer
  // (handshake, alerts, session tickets) to *wire_out. False: fatal (bad handshake, garbage).
  virtual bool on_wire(std::string_view wire, std::string* plain, std::string* wire_out) = 0;
  // Application bytes to send; may be held until the handshake completes.
  virtual bool on_plain(std::string_view plain, std::string* wire_out) = 0;
  // Before a half-close or close: close_notify, if any.
  virtual void on_shutdown(std::string* wire_out) = 0;
  virtual bool handshake_complete() const = 0;
  // The peer said it sends nothing more (TLS close_notify): the stream's end, as a FIN would be.
  // Some peers send no FIN until they get ours, so the stream must not wait for one.
  virtual bool peer_closed() const = 0;
  // The application protocol agreed in the handshake (TLS ALPN: "h2", "http/1.1"), or empty.
  virtual std::string_view application_protocol() const { return {}; }
};

}  // namespace limpet::net
