// Session ticket keys that rotate by themselves: the keys of each period are derived from a
// process-wide random secret and the period number, so every worker thread and every SSL_CTX
// (reloads included) agrees on them without shared mutable state. Any thread.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>

namespace limpet::tls {

class TicketKeys {
 public:
  // A ticket is issued under the current period's key and accepted during that period and the
  // next (renewed when it is in the next), so tickets live at most two periods.
  static constexpr uint64_t kPeriodSeconds = 3600;

  // `now` returns Unix seconds; tests inject a clock.
  explicit TicketKeys(std::function<uint64_t()> now = {});
  TicketKeys(const TicketKeys&) = delete;
  TicketKeys& operator=(const TicketKeys&) = delete;

  // The keys every listener uses: tickets stay valid across reloads.
  static const TicketKeys& process();

  // The work of SSL_CTX_set_tlsext_ticket_key_evp_cb: 1 = key set, 2 = accepted but renew the
  // ticket, 0 = unknown or expired key (full handshake), -1 = error.
  int handle(unsigned char key_name[16], unsigned char* iv, EVP_CIPHER_CTX* cipher, EVP_MAC_CTX* mac,
             int encrypt) const;

 private:
  struct PeriodKeys {
    unsigned char name[16];
    unsigned char aes[32];
    unsigned char hmac[32];
  };
  bool derive(uint64_t period, PeriodKeys* out) const;
  // The keys of `period`, derived once per thread and period (a handshake would otherwise pay
  // three HMACs per ticket); null if deriving failed.
  const PeriodKeys* keys_for(uint64_t period) const;
  uint64_t period_now() const;

  std::function<uint64_t()> now_;
  uint64_t id_;  // tells apart instances in the per-thread cache (addresses get reused)
  unsigned char secret_[32];
};

}  // namespace limpet::tls
