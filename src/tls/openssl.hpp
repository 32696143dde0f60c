// Small OpenSSL helpers private to src/tls: owning pointers and the error queue as text.
// Any thread (the OpenSSL error queue is per thread).
#pragma once

#include <openssl/err.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

namespace limpet::tls::detail {

template <auto Free>
struct FreeWith {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using X509Ptr = std::unique_ptr<X509, FreeWith<X509_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, FreeWith<EVP_PKEY_free>>;
using BioPtr = std::unique_ptr<BIO, FreeWith<BIO_free_all>>;

// The reason of the first error queued on this thread ("" if none), and an empty queue after,
// so that the next connection's error is not mistaken for this one's.
inline std::string take_error() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "";
  const char* reason = ERR_reason_error_string(e);
  return reason != nullptr ? reason : "OpenSSL error " + std::to_string(ERR_GET_REASON(e));
}

}  // namespace limpet::tls::detail
