// TLS on one connection as a net::StreamFilter: OpenSSL reads ciphertext straight from the bytes
// the stream read and writes records straight into the stream's output (a BIO over the filter's
// current buffers), so the filter keeps no buffer of its own between calls; SSL_MODE_RELEASE_BUFFERS
// lets OpenSSL drop its record buffers when a connection is idle. Made by tls::ServerContext /
// ClientContext; owned by one net::Stream; owning worker only.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>

#include "limpet/net/stream_filter.hpp"
#include "limpet/tls/counters.hpp"

namespace limpet::tls {

class Filter final : public net::StreamFilter {
 public:
  enum class Role { kServer, kClient };

  // Takes `ssl` (may be null after an allocation failure: start() then fails). `owner` keeps the
  // context whose callbacks `ssl` uses alive; `peer` names the other side in log lines.
  Filter(SSL* ssl, Role role, std::shared_ptr<const void> owner, Counters* counters, std::string peer);
  ~Filter() override;
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;

  bool start(std::string* wire_out) override;
  bool on_wire(std::string_view wire, std::string* plain, std::string* wire_out) override;
  bool on_plain(std::string_view plain, std::string* wire_out) override;
  void on_shutdown(std::string* wire_out) override;
  bool handshake_complete() const override { return handshake_done_; }

  // What the handshake settled, for logs and tests ("" / false before it completes).
  std::string_view alpn() const;
  std::string_view application_protocol() const override { return alpn(); }
  std::string_view server_name() const;  // the SNI name the client sent
  std::string_view version() const;
  bool resumed() const;
  bool peer_closed() const override { return peer_closed_; }  // close_notify received
  // Plaintext written before the handshake completed, waiting for it.
  size_t held_bytes() const { return held_.size(); }

 private:
  class Io;
  friend class Io;
  static BIO_METHOD* bio_method();
  static int bio_read(BIO* bio, char* out, int size);
  static int bio_write(BIO* bio, const char* data, int size);
  static long bio_ctrl(BIO* bio, int cmd, long num, void* ptr);

  bool advance_handshake();
  void on_handshake_done();
  bool read_plain(std::string* plain);
  bool write_plain(std::string_view plain);
  bool fail(int ssl_error, const char* stage);

  SSL* ssl_;
  Role role_;
  std::shared_ptr<const void> owner_;
  Counters* counters_;
  std::string peer_;
  // The current call's buffers, seen by the BIO (empty / null between calls).
  std::string_view in_;
  std::string* out_ = nullptr;
  std::string held_;
  uint64_t wire_bytes_in_ = 0;
  bool started_ = false;
  bool handshake_done_ = false;
  bool failed_ = false;
  bool peer_closed_ = false;
  bool shutdown_sent_ = false;
};

}  // namespace limpet::tls
