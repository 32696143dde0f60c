#include "limpet/tls/context.hpp"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <initializer_list>

#include "certificate.hpp"
#include "limpet/util/log.hpp"
#include "openssl.hpp"

namespace limpet::tls {
namespace {

using detail::take_error;

constexpr const char* kGroups = "X25519:P-256:P-384";
// Resumption works for one ticket-key period: the same lifetime for tickets and cached sessions.
constexpr long kSessionSeconds = static_cast<long>(TicketKeys::kPeriodSeconds);
constexpr long kSessionCacheSize = 20480;  // with session_tickets = false
constexpr unsigned char kSessionIdContext[] = "limpet";
constexpr unsigned char kAlpnHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return std::tolower(c); });
  return out;
}

// ALPN (RFC 7301): the first protocol of our preference list that the client offers: h2 where
// the listener serves HTTP/2, then http/1.1 (http/1.0 failing that). A client offering only
// protocols we do not speak (h2 alone, where HTTP/2 is off) gets the no_application_protocol
// alert: answering HTTP/1.1 to a client that asked for something else would fail later and less
// clearly. No ALPN at all is fine.
using AlpnPreference = std::array<std::string_view, 3>;
constexpr AlpnPreference kAlpnHttp1{"http/1.1", "http/1.0", ""};
constexpr AlpnPreference kAlpnWithH2{"h2", "http/1.1", "http/1.0"};

int alpn_select_cb(SSL*, const unsigned char** out, unsigned char* out_size, const unsigned char* in,
                   unsigned int in_size, void* arg) {
  for (std::string_view wanted : *static_cast<const AlpnPreference*>(arg)) {
    if (wanted.empty()) break;
    for (unsigned int i = 0; i < in_size && i + 1 + in[i] <= in_size; i += 1 + in[i]) {
      if (std::string_view(reinterpret_cast<const char*>(in + i + 1), in[i]) == wanted) {
        *out = in + i + 1;
        *out_size = in[i];
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

int ticket_key_cb(SSL* ssl, unsigned char name[16], unsigned char iv[EVP_MAX_IV_LENGTH], EVP_CIPHER_CTX* cipher,
                  EVP_MAC_CTX* mac, int encrypt) {
  const auto* keys = static_cast<const TicketKeys*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  const int result = keys->handle(name, iv, cipher, mac, encrypt);
  // TLS 1.3 clients use a ticket once (RFC 8446 C.4): without a new ticket on every resumption,
  // every other connection of a client would be a full handshake.
  return result == 1 && encrypt == 0 && SSL_version(ssl) == TLS1_3_VERSION ? 2 : result;
}

// Everything but the certificate: the same on every context of a listener, since SNI switches
// an SSL between them mid-handshake.
Status configure_server(SSL_CTX* ctx, const config::ListenerTls& config, const TicketKeys& keys, bool offer_h2) {
  SSL_CTX_set_min_proto_version(ctx, config.min_version == config::TlsVersion::kTls13 ? TLS1_3_VERSION
                                                                                        : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               (config.session_tickets ? 0 : SSL_OP_NO_TICKET));
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  const std::string ciphers = config.ciphers.empty() ? kDefaultCiphers : config.ciphers;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    return Status::fail("ciphers \"" + ciphers + "\": " + take_error());
  }
  const std::string suites = config.ciphersuites.empty() ? kDefaultCiphersuites : config.ciphersuites;
  if (SSL_CTX_set_ciphersuites(ctx, suites.c_str()) != 1) {
    return Status::fail("ciphersuites \"" + suites + "\": " + take_error());
  }
  if (SSL_CTX_set1_groups_list(ctx, kGroups) != 1) return Status::fail("groups: " + take_error());
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, const_cast<AlpnPreference*>(offer_h2 ? &kAlpnWithH2 : &kAlpnHttp1));
  SSL_CTX_set_session_id_context(ctx, kSessionIdContext, sizeof kSessionIdContext - 1);
  SSL_CTX_set_timeout(ctx, kSessionSeconds);
  if (config.session_tickets) {
    // Stateless resumption: nothing stored, nothing locked across workers.
    SSL_CTX_set_app_data(ctx, const_cast<TicketKeys*>(&keys));
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_key_cb);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, kSessionCacheSize);
  }
  return Status::ok();
}

Status use_certificate(SSL_CTX* ctx, const detail::CertifiedKey& cert, const config::TlsCertificate& files) {
  // Fails for keys the security level refuses ("ee key too small"): name the file.
  if (SSL_CTX_use_certificate(ctx, cert.leaf.get()) != 1) return Status::fail(files.cert + ": " + take_error());
  for (const auto& extra : cert.chain) {
    if (SSL_CTX_add1_chain_cert(ctx, extra.get()) != 1) return Status::fail(files.cert + ": chain: " + take_error());
  }
  if (SSL_CTX_use_PrivateKey(ctx, cert.key.get()) != 1) return Status::fail(files.key + ": " + take_error());
  return Status::ok();
}

// The host part of "host:port" / "[v6]:port" as written.
std::string host_of(const config::Address& address) {
  const std::string& text = address.text;
  if (text.starts_with('[')) return text.substr(1, text.find(']') - 1);
  return text.substr(0, text.rfind(':'));
}

bool is_ip_literal(const std::string& host) {
  unsigned char buf[16];
  return inet_pton(AF_INET, host.c_str(), buf) == 1 || inet_pton(AF_INET6, host.c_str(), buf) == 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ServerContext

Result<std::shared_ptr<const ServerContext>> ServerContext::build(const config::ListenerTls& config,
                                                                  const TicketKeys& keys, bool offer_h2) {
  using Built = Result<std::shared_ptr<const ServerContext>>;
  const auto fail = [](const std::string& why) { return Built::fail(why); };
  auto self = std::shared_ptr<ServerContext>(new ServerContext());

  std::vector<const config::TlsCertificate*> files{&config.certificate};
  for (const auto& c : config.certificates) files.push_back(&c);
  std::vector<std::vector<std::string>> names;
  for (const config::TlsCertificate* f : files) {
    auto loaded = detail::load_certified_key(*f);
    if (!loaded) return fail(loaded.message());
    SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
    if (!ctx) return fail("cannot create a TLS context: " + take_error());
    if (Status st = configure_server(ctx.get(), config, keys, offer_h2); !st) return fail(st.message());
    if (Status st = use_certificate(ctx.get(), *loaded, *f); !st) return fail(st.message());
    SSL_CTX_set_tlsext_servername_callback(ctx.get(), on_servername_cb);
    SSL_CTX_set_tlsext_servername_arg(ctx.get(), self.get());
    names.push_back(f->names.empty() ? loaded->dns_names : f->names);
    self->contexts_.push_back(std::move(ctx));
  }
  // The SNI entries claim their names first, the default certificate's own names last; within
  // that order the first certificate to name a host serves it.
  const auto claim = [&](size_t index) {
    for (const std::string& name : names[index]) {
      if (name.starts_with("*.")) {
        self->wildcard_.emplace(lower(name.substr(2)), index);
      } else {
        self->exact_.emplace(lower(name), index);
      }
    }
  };
  for (size_t i = 1; i < files.size(); ++i) claim(i);
  claim(0);
  return std::shared_ptr<const ServerContext>(std::move(self));
}

SSL_CTX* ServerContext::context_for(std::string_view server_name) const {
  std::string name = lower(server_name);
  if (name.ends_with('.')) name.pop_back();  // an absolute name, "example.com."
  if (auto it = exact_.find(name); it != exact_.end()) return contexts_[it->second].get();
  if (const size_t dot = name.find('.'); dot != std::string::npos) {
    if (auto it = wildcard_.find(name.substr(dot + 1)); it != wildcard_.end()) return contexts_[it->second].get();
  }
  return contexts_[0].get();
}

int ServerContext::on_servername_cb(SSL* ssl, int*, void* arg) {
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (name == nullptr) return SSL_TLSEXT_ERR_NOACK;  // no SNI: the default certificate
  SSL_CTX* ctx = static_cast<const ServerContext*>(arg)->context_for(name);
  if (ctx != SSL_get_SSL_CTX(ssl) && SSL_set_SSL_CTX(ssl, ctx) == nullptr) return SSL_TLSEXT_ERR_ALERT_FATAL;
  return SSL_TLSEXT_ERR_OK;
}

std::unique_ptr<Filter> ServerContext::new_filter(Counters* counters, std::string peer) const {
  return std::make_unique<Filter>(SSL_new(contexts_[0].get()), Filter::Role::kServer, shared_from_this(), counters,
                                  "client " + peer);
}

// ---------------------------------------------------------------------------------------------
// ClientContext

Result<std::shared_ptr<const ClientContext>> ClientContext::build(const config::UpstreamTls& config,
                                                                  const std::string& upstream) {
  using Built = Result<std::shared_ptr<const ClientContext>>;
  const auto fail = [](const std::string& why) { return Built::fail(why); };
  auto self = std::shared_ptr<ClientContext>(new ClientContext());
  self->ctx_.reset(SSL_CTX_new(TLS_client_method()));
  SSL_CTX* ctx = self->ctx_.get();
  if (ctx == nullptr) return fail("cannot create a TLS context: " + take_error());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_set_alpn_protos(ctx, kAlpnHttp11, sizeof kAlpnHttp11) != 0) return fail("ALPN: " + take_error());
  self->verify_ = config.verify;
  self->server_name_ = config.server_name;
  if (!config.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    LOG_WARN("%s: upstream \"%s\": tls.verify = false: backend certificates are not checked", config.where.c_str(),
             upstream.c_str());
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    if (!config.ca_file.empty()) {
      if (auto readable = detail::read_file(config.ca_file); !readable) return fail(readable.message());
      if (SSL_CTX_load_verify_file(ctx, config.ca_file.c_str()) != 1) {
        return fail(config.ca_file + ": no CA certificate could be loaded: " + take_error());
      }
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      return fail("cannot load the system CA store: " + take_error());
    }
  }
  return std::shared_ptr<const ClientContext>(std::move(self));
}

std::unique_ptr<Filter> ClientContext::new_filter(const config::BackendConfig& backend, Counters* counters) const {
  SSL* ssl = SSL_new(ctx_.get());
  const std::string name = server_name_.empty() ? host_of(backend.address) : server_name_;
  if (ssl != nullptr) {
    // RFC 6066 §3: SNI carries host names only; an address is checked against the certificate's
    // IP addresses instead.
    const bool ip = is_ip_literal(name);
    if (!ip) SSL_set_tlsext_host_name(ssl, name.c_str());
    if (verify_) {
      SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str())
                        : SSL_set1_host(ssl, name.c_str());
      if (ok != 1) {
        SSL_free(ssl);
        ssl = nullptr;
      }
    }
  }
  return std::make_unique<Filter>(ssl, Filter::Role::kClient, shared_from_this(), counters,
                                  "backend " + backend.name + " (" + backend.address.text + ")");
}

const char* library_version() { return OpenSSL_version(OPENSSL_VERSION); }

}  // namespace limpet::tls
