#include "test_pki.hpp"

#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>

namespace limpet::tls::testing {
namespace {

EVP_PKEY* new_key() { return EVP_EC_gen("P-256"); }

void add_extension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str());
  ASSERT_NE(ext, nullptr) << value;
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// Signed by `issuer_key`; `issuer` null = self-signed.
X509* make_cert(const std::string& cn, EVP_PKEY* key, X509* issuer, EVP_PKEY* issuer_key, const LeafOptions& o,
                bool ca) {
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  unsigned char serial[8];
  RAND_bytes(serial, sizeof serial);
  serial[0] &= 0x7f;
  BIGNUM* bn = BN_bin2bn(serial, sizeof serial, nullptr);
  BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert));
  BN_free(bn);
  X509_gmtime_adj(X509_getm_notBefore(cert), static_cast<long>(o.not_before_days) * 86400);
  X509_gmtime_adj(X509_getm_notAfter(cert), static_cast<long>(o.not_after_days) * 86400);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, issuer != nullptr ? X509_get_subject_name(issuer) : name);
  X509_set_pubkey(cert, key);
  X509* signer = issuer != nullptr ? issuer : cert;
  if (ca) {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:TRUE");
    add_extension(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_extension(cert, signer, NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert, signer, NID_ext_key_usage, "serverAuth");
  }
  add_extension(cert, signer, NID_subject_key_identifier, "hash");
  std::string san;
  for (const auto& d : o.dns) san += (san.empty() ? "DNS:" : ",DNS:") + d;
  for (const auto& ip : o.ips) san += (san.empty() ? "IP:" : ",IP:") + ip;
  if (!san.empty()) add_extension(cert, signer, NID_subject_alt_name, san);
  X509_sign(cert, issuer_key, EVP_sha256());
  return cert;
}

std::string pem_of(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::string pem_of(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

}  // namespace

Pki::Pki() {
  std::string pattern = std::filesystem::temp_directory_path() / "limpet-tls-XXXXXX";
  dir_ = mkdtemp(pattern.data());
  ca_key_ = new_key();
  LeafOptions o;
  o.not_after_days = 365;
  ca_cert_ = make_cert("limpet test CA", ca_key_, nullptr, ca_key_, o, true);
  write("ca.pem", pem_of(ca_cert_));
}

Pki::~Pki() {
  X509_free(ca_cert_);
  EVP_PKEY_free(ca_key_);
  std::filesystem::remove_all(dir_);
}

std::string Pki::write(const std::string& name, const std::string& text) {
  const std::string path = dir_ + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

config::TlsCertificate Pki::issue(const std::string& name, const LeafOptions& options) {
  EVP_PKEY* key = new_key();
  X509* cert = make_cert(options.dns.empty() ? name : options.dns.front(), key, ca_cert_, ca_key_, options, false);
  config::TlsCertificate files;
  files.cert = write(name + ".pem", pem_of(cert) + (options.with_chain ? pem_of(ca_cert_) : ""));
  files.key = write(name + ".key", pem_of(key));
  X509_free(cert);
  EVP_PKEY_free(key);
  return files;
}

std::string Pki::stray_key(const std::string& name) {
  EVP_PKEY* key = new_key();
  const std::string path = write(name + ".key", pem_of(key));
  EVP_PKEY_free(key);
  return path;
}

SSL_CTX* Pki::new_client_ctx() const {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_load_verify_file(ctx, ca_file().c_str());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  return ctx;
}

}  // namespace limpet::tls::testing
