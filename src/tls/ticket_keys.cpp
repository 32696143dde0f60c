#include "limpet/tls/ticket_keys.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace limpet::tls {
namespace {

void put_be64(unsigned char* out, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) out[i] = static_cast<unsigned char>(v);
}

uint64_t get_be64(const unsigned char* in) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | in[i];
  return v;
}

// AES-256-CBC fetched once: an implicit fetch on every ticket takes OpenSSL 3's provider locks.
const EVP_CIPHER* ticket_cipher() {
  static EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-CBC", nullptr);
  return cipher;
}

std::atomic<uint64_t> next_id{1};

}  // namespace

TicketKeys::TicketKeys(std::function<uint64_t()> now) : now_(std::move(now)), id_(next_id.fetch_add(1)) {
  if (!now_) now_ = [] { return static_cast<uint64_t>(std::time(nullptr)); };
  // Without randomness every ticket key would be guessable: better to stop at startup.
  if (RAND_bytes(secret_, sizeof secret_) != 1) std::abort();
}

const TicketKeys& TicketKeys::process() {
  static const TicketKeys keys;
  return keys;
}

uint64_t TicketKeys::period_now() const { return now_() / kPeriodSeconds; }

// name = period (8 bytes, big endian) + 8 bytes of a MAC of it, so a forged or foreign name is
// recognised before any key is used; the AES and HMAC keys are separate MACs of the period.
bool TicketKeys::derive(uint64_t period, PeriodKeys* out) const {
  unsigned char label[9];
  put_be64(label + 1, period);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const auto mac = [&](unsigned char tag, unsigned char* dest, size_t size) {
    label[0] = tag;
    if (HMAC(EVP_sha256(), secret_, sizeof secret_, label, sizeof label, digest, &length) == nullptr ||
        length < size) {
      return false;
    }
    std::memcpy(dest, digest, size);
    return true;
  };
  put_be64(out->name, period);
  return mac('n', out->name + 8, 8) && mac('a', out->aes, sizeof out->aes) && mac('h', out->hmac, sizeof out->hmac);
}

const TicketKeys::PeriodKeys* TicketKeys::keys_for(uint64_t period) const {
  struct Cached {
    uint64_t owner = 0;
    uint64_t period = 0;
    bool ok = false;
    PeriodKeys keys{};
  };
  thread_local Cached cache[2];  // this period and the previous one, while they overlap
  Cached& slot = cache[period & 1];
  if (slot.owner != id_ || slot.period != period) {
    slot.owner = id_;
    slot.period = period;
    slot.ok = derive(period, &slot.keys);
  }
  return slot.ok ? &slot.keys : nullptr;
}

int TicketKeys::handle(unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
                       int encrypt) const {
  const uint64_t now = period_now();
  const EVP_CIPHER* aes = ticket_cipher();
  const PeriodKeys* keys = nullptr;
  int result = 1;
  if (encrypt != 0) {
    keys = keys_for(now);
    if (keys == nullptr || aes == nullptr || RAND_bytes(iv, EVP_CIPHER_get_iv_length(aes)) != 1) return -1;
    std::memcpy(key_name, keys->name, sizeof keys->name);
  } else {
    const uint64_t period = get_be64(key_name);
    if (period != now && period + 1 != now) return 0;  // expired (or from the future): full handshake
    keys = keys_for(period);
    if (keys == nullptr || aes == nullptr || CRYPTO_memcmp(key_name, keys->name, sizeof keys->name) != 0) return 0;
    result = period == now ? 1 : 2;
  }
  char digest_name[] = "SHA256";
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, const_cast<unsigned char*>(keys->hmac),
                                        sizeof keys->hmac),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
      OSSL_PARAM_construct_end(),
  };
  const bool ok = (encrypt != 0 ? EVP_EncryptInit_ex2(cipher, aes, keys->aes, iv, nullptr)
                                 : EVP_DecryptInit_ex2(cipher, aes, keys->aes, iv, nullptr)) == 1 &&
                  EVP_MAC_CTX_set_params(mac, params) == 1;
  return ok ? result : -1;
}

}  // namespace limpet::tls
