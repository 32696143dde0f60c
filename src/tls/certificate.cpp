#include "certificate.hpp"

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "limpet/util/log.hpp"

namespace limpet::tls::detail {
namespace {

// Certificates close to their end get a warning at every snapshot build (startup, reload).
constexpr int kExpiryWarningDays = 14;

// An encrypted key would make OpenSSL prompt on the terminal; a daemon cannot answer.
int no_passphrase_cb(char*, int, int, void*) { return -1; }

// `what`, and OpenSSL's reason unless it only says that no PEM block was found.
std::string pem_failure(const std::string& what) {
  const unsigned long e = ERR_peek_last_error();
  const bool nothing_found = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
  const std::string reason = take_error();
  return nothing_found || reason.empty() ? what : what + ": " + reason;
}

std::string time_text(const ASN1_TIME* t) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(t, &tm) != 1) return "an unreadable date";
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return text;
}

std::vector<std::string> subject_dns_names(X509* cert) {
  std::vector<std::string> out;
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    if (name->type != GEN_DNS) continue;
    const ASN1_IA5STRING* dns = name->d.dNSName;
    std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(dns)),
                     static_cast<size_t>(ASN1_STRING_length(dns)));
    std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
    out.push_back(std::move(text));
  }
  GENERAL_NAMES_free(names);
  return out;
}

BioPtr memory_bio(const std::string& bytes) {
  return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

}  // namespace

Result<std::string> read_file(const std::string& path) {
  const std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!file) return Result<std::string>::fail(path + ": cannot open: " + std::strerror(errno));
  std::string bytes;
  char buf[8192];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, file.get())) > 0;) bytes.append(buf, n);
  if (std::ferror(file.get()) != 0) return Result<std::string>::fail(path + ": cannot read: " + std::strerror(errno));
  return bytes;
}

Result<CertifiedKey> load_certified_key(const config::TlsCertificate& files) {
  const auto fail = [](const std::string& file, const std::string& why) {
    return Result<CertifiedKey>::fail(file + ": " + why);
  };
  ERR_clear_error();
  CertifiedKey out;

  auto cert_pem = read_file(files.cert);
  if (!cert_pem) return Result<CertifiedKey>::fail(cert_pem.message());
  BioPtr bio = memory_bio(*cert_pem);
  out.leaf.reset(PEM_read_bio_X509_AUX(bio.get(), nullptr, no_passphrase_cb, nullptr));
  if (!out.leaf) return fail(files.cert, pem_failure("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file"));
  // The rest of the file is the chain; other PEM blocks (a key kept in the same file) are skipped.
  while (X509* next = PEM_read_bio_X509(bio.get(), nullptr, no_passphrase_cb, nullptr)) out.chain.emplace_back(next);
  const unsigned long end = ERR_peek_last_error();
  if (end != 0 && (ERR_GET_LIB(end) != ERR_LIB_PEM || ERR_GET_REASON(end) != PEM_R_NO_START_LINE)) {
    return fail(files.cert, "certificate " + std::to_string(out.chain.size() + 2) + " of the chain: " + take_error());
  }
  ERR_clear_error();

  auto key_pem = read_file(files.key);
  if (!key_pem) return Result<CertifiedKey>::fail(key_pem.message());
  bio = memory_bio(*key_pem);
  out.key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase_cb, nullptr));
  if (!out.key) {
    return fail(files.key, pem_failure("no unencrypted PEM private key in the file (passphrases are not supported)"));
  }
  if (X509_check_private_key(out.leaf.get(), out.key.get()) != 1) {
    ERR_clear_error();
    return fail(files.key, "private key does not match the certificate in " + files.cert);
  }

  const ASN1_TIME* not_after = X509_get0_notAfter(out.leaf.get());
  const int expired = X509_cmp_current_time(not_after);
  if (expired == 0) return fail(files.cert, "certificate has an unreadable expiry date");
  if (expired < 0) return fail(files.cert, "certificate expired on " + time_text(not_after));
  if (X509_cmp_current_time(X509_get0_notBefore(out.leaf.get())) > 0) {
    LOG_WARN("%s: certificate is not valid before %s (clock skew?)", files.cert.c_str(),
             time_text(X509_get0_notBefore(out.leaf.get())).c_str());
  }
  int days = 0;
  int seconds = 0;
  if (ASN1_TIME_diff(&days, &seconds, nullptr, not_after) == 1 && days < kExpiryWarningDays) {
    LOG_WARN("%s: certificate expires in %d days (%s)", files.cert.c_str(), days, time_text(not_after).c_str());
  }
  out.dns_names = subject_dns_names(out.leaf.get());
  return out;
}

}  // namespace limpet::tls::detail
