// TLS contexts built from the config when a snapshot is built (main thread), then shared read-only
// by every worker: a ServerContext per TLS listener (its certificates, chosen by SNI; versions,
// ciphers, ALPN http/1.1, session tickets) and a ClientContext per TLS upstream (verification
// against a CA file or the system store, SNI). Building reads and checks every file, so a bad
// certificate fails the snapshot and a reload keeps the old one. new_filter(): owning worker.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/tls/counters.hpp"
#include "limpet/tls/filter.hpp"
#include "limpet/tls/ticket_keys.hpp"
#include "limpet/util/result.hpp"

namespace limpet::tls {

// Cipher settings used when the config leaves them out: forward secrecy and AEAD only, the
// Mozilla "intermediate" profile without DHE (TLS 1.2), and OpenSSL's TLS 1.3 suites.
inline constexpr const char* kDefaultCiphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
inline constexpr const char* kDefaultCiphersuites =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

struct SslCtxDeleter {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

class ServerContext : public std::enable_shared_from_this<ServerContext> {
 public:
  // Errors name the file at fault: "<file>: <reason>" (or the setting: "ciphers \"...\": <reason>").
  // `offer_h2`: ALPN selects h2 when the client offers it (the listener serves HTTP/2).
  static Result<std::shared_ptr<const ServerContext>> build(const config::ListenerTls& config,
                                                            const TicketKeys& keys = TicketKeys::process(),
                                                            bool offer_h2 = false);

  // A filter for an accepted connection from `peer` (an address, for log lines).
  std::unique_ptr<Filter> new_filter(Counters* counters, std::string peer) const;

  // The context whose certificate serves `server_name` (exact name, then "*.parent", else the
  // default); the SNI callback uses it.
  SSL_CTX* context_for(std::string_view server_name) const;

  ServerContext(const ServerContext&) = delete;
  ServerContext& operator=(const ServerContext&) = delete;

 private:
  ServerContext() = default;
  static int on_servername_cb(SSL* ssl, int* alert, void* arg);

  std::vector<SslCtxPtr> contexts_;  // [0]: the default certificate
  std::unordered_map<std::string, size_t> exact_;     // name → index in contexts_
  std::unordered_map<std::string, size_t> wildcard_;  // "example.com" for "*.example.com"
};

class ClientContext : public std::enable_shared_from_this<ClientContext> {
 public:
  // Errors as ServerContext::build's. `upstream` names the upstream in the verify = false warning.
  static Result<std::shared_ptr<const ClientContext>> build(const config::UpstreamTls& config,
                                                            const std::string& upstream);

  // A filter for a new connection to `backend`: SNI and the verified name are server_name, else
  // the host the backend's address names (an IP address is verified against the certificate's
  // IP addresses, and sends no SNI).
  std::unique_ptr<Filter> new_filter(const config::BackendConfig& backend, Counters* counters) const;

  ClientContext(const ClientContext&) = delete;
  ClientContext& operator=(const ClientContext&) = delete;

 private:
  ClientContext() = default;

  SslCtxPtr ctx_;
  bool verify_ = true;
  std::string server_name_;
};

// The OpenSSL this process runs with ("OpenSSL 3.0.15 3 Sep 2024"): the shared library's, which
// a security update changes without a rebuild.
const char* library_version();

}  // namespace limpet::tls
