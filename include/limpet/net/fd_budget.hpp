// The process's file descriptors as limpet spends them (issue 17). RLIMIT_NOFILE bounds them all:
// limpet raises the soft limit to the hard one at start, keeps a reserve for what it does not
// count (listening sockets, loops, logs, the admin listener's connections), and counts every
// socket a net::Stream holds (clients, backends, pooled idle connections, health checks, the
// session store). A new client connection is admitted only while it and the backend connection
// it will need fit; at the limit the workers pause their listeners (new clients wait in the
// kernel's backlog) instead of failing accept() with EMFILE in a loop, and resume when fds free up.
// Process-wide; any thread (relaxed atomics: the check is a budget, not a lock).
#pragma once

#include <atomic>
#include <cstdint>

namespace limpet::net {

class FdBudget {
 public:
  // Each admitted client may hold its own socket and one to a backend.
  static constexpr int64_t kPerClient = 2;

  // Raises the soft RLIMIT_NOFILE to the hard one (as far as allowed); the limit in force.
  static uint64_t raise_limit();

  // The budget: `limit` fds, `reserve` of them for what is not counted.
  void configure(uint64_t limit, uint64_t reserve) {
    limit_.store(static_cast<int64_t>(limit), std::memory_order_relaxed);
    capacity_.store(static_cast<int64_t>(limit > reserve ? limit - reserve : 0), std::memory_order_relaxed);
  }
  // Room for one more client connection and its backend connection, counting the backend
  // connections admitted clients have not opened yet (a burst of accepts comes before any of
  // their connects). Unconfigured: always.
  bool room_for_client() const {
    const int64_t capacity = capacity_.load(std::memory_order_relaxed);
    return capacity < 0 || in_use() + reserved_.load(std::memory_order_relaxed) + kPerClient <= capacity;
  }
  void opened() { in_use_.fetch_add(1, std::memory_order_relaxed); }
  void closed() { in_use_.fetch_sub(1, std::memory_order_relaxed); }
  void reserve() { reserved_.fetch_add(1, std::memory_order_relaxed); }
  void unreserve() { reserved_.fetch_sub(1, std::memory_order_relaxed); }

  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  int64_t capacity() const { return capacity_.load(std::memory_order_relaxed); }
  int64_t limit() const { return limit_.load(std::memory_order_relaxed); }

  // Incidents: the budget was found full. True for the call that starts one, so that exactly
  // one log line says so; listeners pause and resume at the exact limit meanwhile, as fds come
  // and go, without a line each time.
  bool note_full() { return !full_.exchange(true, std::memory_order_relaxed) && (++incidents_, true); }
  bool full() const { return full_.load(std::memory_order_relaxed); }
  // The incident ends once usage is a tenth of the budget below the limit: true for the call
  // that ends it.
  bool note_room() {
    const int64_t capacity = capacity_.load(std::memory_order_relaxed);
    const int64_t used = in_use() + reserved_.load(std::memory_order_relaxed);
    return used <= capacity - capacity / 10 && full_.exchange(false, std::memory_order_relaxed);
  }
  uint64_t incidents() const { return incidents_.load(std::memory_order_relaxed); }

 private:
  std::atomic<int64_t> limit_{0};
  std::atomic<int64_t> capacity_{-1};  // -1: not configured (unit tests, tools)
  std::atomic<int64_t> in_use_{0};
  std::atomic<int64_t> reserved_{0};
  std::atomic<bool> full_{false};
  std::atomic<uint64_t> incidents_{0};
};

// The process's one budget; net::Stream counts its sockets in it.
FdBudget& fd_budget();

// The fd an admitted client connection holds back for its backend connection, until that is
// opened (or taken from the pool) or the client goes. Owning worker only.
class FdReservation {
 public:
  FdReservation() { fd_budget().reserve(); }
  ~FdReservation() { release(); }
  FdReservation(const FdReservation&) = delete;
  FdReservation& operator=(const FdReservation&) = delete;
  void release() {
    if (!held_) return;
    held_ = false;
    fd_budget().unreserve();
  }

 private:
  bool held_ = true;
};

}  // namespace limpet::net
