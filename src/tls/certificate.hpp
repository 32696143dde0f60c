// Reads a certificate chain and its private key from PEM files and checks them: they parse, the
// key matches, the leaf has not expired. Private to src/tls; main thread (snapshot builds).
#pragma once

#include <string>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/util/result.hpp"
#include "openssl.hpp"

namespace limpet::tls::detail {

struct CertifiedKey {
  X509Ptr leaf;
  std::vector<X509Ptr> chain;  // intermediates after the leaf in the certificate file
  PkeyPtr key;
  std::vector<std::string> dns_names;  // subjectAltName DNS entries, lower case
};

// Errors read "<file>: <reason>".
Result<CertifiedKey> load_certified_key(const config::TlsCertificate& files);

// The PEM file's bytes, or "<file>: cannot open: <errno text>".
Result<std::string> read_file(const std::string& path);

}  // namespace limpet::tls::detail
