// Certificates made at test time with the OpenSSL API: a test CA and leaves it signs (names,
// addresses, validity window), written as PEM files into a fresh temporary directory. Test thread.
#pragma once

#include <openssl/ssl.h>

#include <string>
#include <vector>

#include "limpet/config/config.hpp"

namespace limpet::tls::testing {

struct LeafOptions {
  std::vector<std::string> dns;  // subjectAltName DNS entries
  std::vector<std::string> ips;  // subjectAltName IP entries
  int not_before_days = -1;      // relative to now
  int not_after_days = 30;
  bool with_chain = false;       // append the CA to the certificate file
};

inline LeafOptions for_names(std::vector<std::string> dns, std::vector<std::string> ips = {}) {
  LeafOptions o;
  o.dns = std::move(dns);
  o.ips = std::move(ips);
  return o;
}

// Valid last month, expired since yesterday.
inline LeafOptions expired_for(std::vector<std::string> dns) {
  LeafOptions o = for_names(std::move(dns));
  o.not_before_days = -30;
  o.not_after_days = -1;
  return o;
}

class Pki {
 public:
  Pki();  // a new CA in a new directory
  ~Pki();
  Pki(const Pki&) = delete;
  Pki& operator=(const Pki&) = delete;

  // Writes NAME.pem and NAME.key; names = the config's (empty: taken from the certificate).
  config::TlsCertificate issue(const std::string& name, const LeafOptions& options);
  // A key that matches no certificate, as NAME.key.
  std::string stray_key(const std::string& name);
  // Writes `text` as NAME.
  std::string write(const std::string& name, const std::string& text);

  const std::string& dir() const { return dir_; }
  std::string ca_file() const { return dir_ + "/ca.pem"; }
  // A client SSL_CTX trusting the CA, for tests that talk to limpet's server side as an outsider.
  SSL_CTX* new_client_ctx() const;

 private:
  std::string dir_;
  EVP_PKEY* ca_key_ = nullptr;
  X509* ca_cert_ = nullptr;
};

}  // namespace limpet::tls::testing
