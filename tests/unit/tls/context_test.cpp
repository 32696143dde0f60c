// TLS contexts from the config: what a snapshot build accepts and refuses (with the file named),
// SNI certificate selection, and verification of backends' certificates.
#include "limpet/tls/context.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/pem.h>

#include "link.hpp"
#include "test_pki.hpp"

namespace limpet::tls {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using testing::Link;
using testing::Pki;
using testing::raw_filter;

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using CtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;

std::string cn_of(SSL_CTX* ctx) {
  char cn[256] = "";
  X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_CTX_get0_certificate(ctx)), NID_commonName, cn, sizeof cn);
  return cn;
}

class ContextTest : public ::testing::Test {
 protected:
  config::ListenerTls listener(const config::TlsCertificate& cert) {
    config::ListenerTls l;
    l.enabled = true;
    l.certificate = cert;
    l.where = "t.toml:3:7";
    return l;
  }

  std::string build_error(const config::ListenerTls& l) {
    auto built = ServerContext::build(l);
    EXPECT_FALSE(built);
    return built ? "" : built.message();
  }

  config::TlsCertificate leaf(const std::string& name, testing::LeafOptions o = {}) {
    if (o.dns.empty()) o.dns = {name};
    return pki_.issue(name, o);
  }

  Pki pki_;
};

// ---- building: every problem names its file ---------------------------------------------------

TEST_F(ContextTest, GoodCertificateWithChainBuilds) {
  testing::LeafOptions o;
  o.dns = {"a.test"};
  o.with_chain = true;
  auto built = ServerContext::build(listener(pki_.issue("a", o)));
  ASSERT_TRUE(built) << built.message();
  STACK_OF(X509)* chain = nullptr;
  SSL_CTX_get0_chain_certs((*built)->context_for("a.test"), &chain);
  EXPECT_EQ(sk_X509_num(chain), 1);
}

TEST_F(ContextTest, CertificateAndKeyInOneFile) {
  config::TlsCertificate files = leaf("both");
  std::string pem;
  for (const auto& path : {files.cert, files.key}) {
    FILE* f = std::fopen(path.c_str(), "rb");
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) pem.append(buf, n);
    std::fclose(f);
  }
  files.cert = files.key = pki_.write("both-combined.pem", pem);
  auto built = ServerContext::build(listener(files));
  ASSERT_TRUE(built) << built.message();
}

TEST_F(ContextTest, MissingFiles) {
  config::TlsCertificate files = leaf("m");
  files.cert = pki_.dir() + "/nope.pem";
  EXPECT_EQ(build_error(listener(files)), pki_.dir() + "/nope.pem: cannot open: No such file or directory");
  files = leaf("m2");
  files.key = pki_.dir() + "/nope.key";
  EXPECT_EQ(build_error(listener(files)), pki_.dir() + "/nope.key: cannot open: No such file or directory");
}

TEST_F(ContextTest, FilesThatAreNotPem) {
  config::TlsCertificate files = leaf("g");
  files.cert = pki_.write("garbage.pem", "this is not a certificate\n");
  EXPECT_EQ(build_error(listener(files)),
            files.cert + ": no PEM certificate (-----BEGIN CERTIFICATE-----) in the file");
  files = leaf("g2");
  files.key = files.cert;  // a certificate where the key should be
  EXPECT_THAT(build_error(listener(files)), StartsWith(files.key + ": no unencrypted PEM private key"));
  files = leaf("g3");
  files.cert = pki_.write("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA!!!\n-----END CERTIFICATE-----\n");
  EXPECT_THAT(build_error(listener(files)), StartsWith(files.cert + ": no PEM certificate"));
}

TEST_F(ContextTest, KeyThatDoesNotMatch) {
  config::TlsCertificate files = leaf("k");
  files.key = pki_.stray_key("stray");
  EXPECT_EQ(build_error(listener(files)),
            files.key + ": private key does not match the certificate in " + files.cert);
}

TEST_F(ContextTest, EncryptedKeyIsRefusedWithoutPrompting) {
  config::TlsCertificate files = leaf("e");
  BIO* in = BIO_new_file(files.key.c_str(), "r");
  EVP_PKEY* key = PEM_read_bio_PrivateKey(in, nullptr, nullptr, nullptr);
  BIO_free(in);
  BIO* out = BIO_new_file(files.key.c_str(), "w");
  char pass[] = "secret";
  PEM_write_bio_PrivateKey(out, key, EVP_aes_128_cbc(), nullptr, 0, nullptr, pass);
  BIO_free(out);
  EVP_PKEY_free(key);
  EXPECT_THAT(build_error(listener(files)), HasSubstr(files.key + ": no unencrypted PEM private key in the file "
                                                                  "(passphrases are not supported)"));
}

TEST_F(ContextTest, ExpiredCertificate) {
  testing::LeafOptions o;
  o.dns = {"old.test"};
  o.not_before_days = -60;
  o.not_after_days = -1;
  config::TlsCertificate files = pki_.issue("old", o);
  const std::string message = build_error(listener(files));
  EXPECT_THAT(message, StartsWith(files.cert + ": certificate expired on 20"));
  EXPECT_THAT(message, HasSubstr(" UTC"));
}

TEST_F(ContextTest, ProblemInAnSniCertificateNamesItsFile) {
  config::ListenerTls l = listener(leaf("default"));
  config::TlsCertificate other = leaf("other");
  other.key = pki_.stray_key("other-stray");
  l.certificates.push_back(other);
  EXPECT_THAT(build_error(l), HasSubstr(other.key + ": private key does not match"));
}

TEST_F(ContextTest, BadCipherSettings) {
  config::ListenerTls l = listener(leaf("c"));
  l.ciphers = "NO-SUCH-CIPHER";
  EXPECT_THAT(build_error(l), StartsWith("ciphers \"NO-SUCH-CIPHER\": "));
  l.ciphers.clear();
  l.ciphersuites = "TLS_NOPE";
  EXPECT_THAT(build_error(l), StartsWith("ciphersuites \"TLS_NOPE\": "));
}

// ---- SNI -----------------------------------------------------------------------------------------

TEST_F(ContextTest, SniChoosesExactThenWildcardThenDefault) {
  config::ListenerTls l = listener(leaf("default.test"));
  config::TlsCertificate api = leaf("api.example.com");
  api.names = {"api.example.com"};
  config::TlsCertificate wild = leaf("wild.example.com", testing::for_names({"*.example.com"}));
  wild.names = {"*.example.com"};
  config::TlsCertificate from_cert = leaf("other.test", testing::for_names({"other.test", "*.other.test"}));
  l.certificates = {api, wild, from_cert};
  auto built = ServerContext::build(l);
  ASSERT_TRUE(built) << built.message();
  const ServerContext& s = **built;
  EXPECT_EQ(cn_of(s.context_for("api.example.com")), "api.example.com");
  EXPECT_EQ(cn_of(s.context_for("API.Example.COM.")), "api.example.com");
  EXPECT_EQ(cn_of(s.context_for("www.example.com")), "*.example.com");
  EXPECT_EQ(cn_of(s.context_for("a.b.example.com")), "default.test") << "a wildcard is one label";
  EXPECT_EQ(cn_of(s.context_for("example.com")), "default.test");
  EXPECT_EQ(cn_of(s.context_for("other.test")), "other.test") << "names from the certificate";
  EXPECT_EQ(cn_of(s.context_for("x.other.test")), "other.test");
  EXPECT_EQ(cn_of(s.context_for("default.test")), "default.test");
  EXPECT_EQ(cn_of(s.context_for("unknown.test")), "default.test");
}

TEST_F(ContextTest, SniDuringTheHandshake) {
  config::ListenerTls l = listener(leaf("default.test"));
  config::TlsCertificate api = leaf("api.example.com");
  api.names = {"api.example.com"};
  l.certificates = {api};
  auto built = ServerContext::build(l);
  ASSERT_TRUE(built) << built.message();
  for (const auto& [sni, expected] : std::vector<std::pair<std::string, std::string>>{
           {"api.example.com", "api.example.com"}, {"", "default.test"}, {"nope.test", "default.test"}}) {
    CtxPtr ctx(pki_.new_client_ctx());
    Link link;
    SSL* ssl = nullptr;
    link.client.filter = raw_filter(ctx.get(), Filter::Role::kClient, &link.client.counters, &ssl);
    if (!sni.empty()) SSL_set_tlsext_host_name(ssl, sni.c_str());
    link.server.filter = (*built)->new_filter(&link.server.counters, "127.0.0.1");
    link.start();
    link.pump();
    ASSERT_TRUE(link.handshaken()) << sni;
    char cn[256] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_get0_peer_certificate(ssl)), NID_commonName, cn, sizeof cn);
    EXPECT_EQ(std::string(cn), expected) << sni;
    EXPECT_EQ(link.server.filter->server_name(), sni);
  }
}

// ---- backends ------------------------------------------------------------------------------------

class BackendTest : public ContextTest {
 protected:
  // limpet's client against a plain OpenSSL server with `files`.
  bool connect(const config::TlsCertificate& files, config::UpstreamTls up, const std::string& address,
               Counters* counters) {
    CtxPtr server(SSL_CTX_new(TLS_server_method()));
    EXPECT_EQ(SSL_CTX_use_certificate_chain_file(server.get(), files.cert.c_str()), 1);
    EXPECT_EQ(SSL_CTX_use_PrivateKey_file(server.get(), files.key.c_str(), SSL_FILETYPE_PEM), 1);
    up.enabled = true;
    up.where = "t.toml:9:7";
    auto client = ClientContext::build(up, "app");
    EXPECT_TRUE(client) << client.message();
    if (!client) return false;
    config::BackendConfig backend;
    backend.name = "b1";
    backend.address.text = address;
    Link link;
    link.client.filter = (*client)->new_filter(backend, counters);
    link.server.filter = raw_filter(server.get(), Filter::Role::kServer, &link.server.counters);
    link.start();
    link.send(link.client, "GET / HTTP/1.1\r\n\r\n");
    link.pump();
    if (link.handshaken()) {
      EXPECT_EQ(link.server.received, "GET / HTTP/1.1\r\n\r\n");
      EXPECT_EQ(link.client.filter->alpn(), "") << "the test server does no ALPN";
    }
    return link.client.ok && link.handshaken();
  }

  config::UpstreamTls with_ca() {
    config::UpstreamTls up;
    up.ca_file = pki_.ca_file();
    return up;
  }
};

TEST_F(BackendTest, VerifiedByNameAndByAddress) {
  Counters counters;
  const auto files = pki_.issue("backend", testing::for_names({"backend.internal"}, {"127.0.0.1", "::1"}));
  config::UpstreamTls up = with_ca();
  up.server_name = "backend.internal";
  EXPECT_TRUE(connect(files, up, "10.1.1.1:443", &counters));
  EXPECT_TRUE(connect(files, with_ca(), "127.0.0.1:8443", &counters)) << "IP SAN";
  EXPECT_TRUE(connect(files, with_ca(), "[::1]:8443", &counters)) << "IPv6 SAN";
  EXPECT_EQ(counters.handshakes, 3u);
  EXPECT_EQ(counters.failures, 0u);
}

TEST_F(BackendTest, WrongNameUnknownCaAndExpiredAreRefused) {
  Counters counters;
  const auto files = pki_.issue("backend", testing::for_names({"backend.internal"}));
  config::UpstreamTls wrong = with_ca();
  wrong.server_name = "other.internal";
  EXPECT_FALSE(connect(files, wrong, "127.0.0.1:8443", &counters));
  EXPECT_FALSE(connect(files, with_ca(), "127.0.0.1:8443", &counters)) << "no IP SAN";
  config::UpstreamTls system_store;  // the test CA is not in it
  system_store.server_name = "backend.internal";
  EXPECT_FALSE(connect(files, system_store, "127.0.0.1:8443", &counters));
  const auto expired = pki_.issue("expired", testing::expired_for({"backend.internal"}));
  config::UpstreamTls named = with_ca();
  named.server_name = "backend.internal";
  EXPECT_FALSE(connect(expired, named, "127.0.0.1:8443", &counters));
  EXPECT_EQ(counters.failures, 4u);
  EXPECT_EQ(counters.handshakes, 0u);
}

TEST_F(BackendTest, VerifyFalseAcceptsAnything) {
  Counters counters;
  const auto expired = pki_.issue("expired", testing::expired_for({"x.internal"}));
  config::UpstreamTls up;
  up.verify = false;
  up.server_name = "other.internal";
  EXPECT_TRUE(connect(expired, up, "127.0.0.1:8443", &counters));
}

TEST_F(BackendTest, CaFileProblems) {
  config::UpstreamTls up;
  up.enabled = true;
  up.where = "t.toml:9:7";
  up.ca_file = pki_.dir() + "/missing-ca.pem";
  auto built = ClientContext::build(up, "app");
  ASSERT_FALSE(built);
  EXPECT_EQ(built.message(),
            up.ca_file + ": cannot open: No such file or directory");
  up.ca_file = pki_.write("not-a-ca.pem", "nothing here\n");
  built = ClientContext::build(up, "app");
  ASSERT_FALSE(built);
  EXPECT_THAT(built.message(), StartsWith(up.ca_file +
                                          ": no CA certificate could be loaded"));
}

}  // namespace
}  // namespace limpet::tls
