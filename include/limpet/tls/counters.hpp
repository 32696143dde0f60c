// TLS handshake counters of one worker, one set for client connections and one for backend
// connections (proxy::WorkerCounters holds both). Written by the owning worker with relaxed
// atomics; the admin layer sums them over workers.
#pragma once

#include <atomic>
#include <cstdint>

namespace limpet::tls {

struct Counters {
  std::atomic<uint64_t> handshakes{0};  // completed
  std::atomic<uint64_t> resumed{0};     // completed by resuming a session (ticket or cache)
  std::atomic<uint64_t> failures{0};    // refused or broken handshakes (versions, ALPN, verification, garbage)
  std::atomic<uint64_t> plaintext{0};   // plain HTTP sent to a TLS port (counted in failures too)
  std::atomic<uint64_t> incomplete{0};  // the connection ended mid-handshake: timeout, or the peer left
};

}  // namespace limpet::tls
