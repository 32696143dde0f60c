// DNS resolution with c-ares for backends given by name ("node.internal:3000"), on the main
// thread's libuv loop: never on a worker. `resolve` is asynchronous (the periodic re-resolution);
// `resolve_now` blocks for start and reload, which must know the addresses before they publish.
// Main thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "limpet/util/result.hpp"

struct ares_channeldata;
struct ares_addrinfo;

namespace limpet::net {

struct Resolved {
  enum class Kind {
    kOk,      // at least one address
    kGone,    // the name does not exist (NXDOMAIN) or has no address: the backends are gone
    kFailed,  // timeout, refused, SERVFAIL, ...: nothing is known, the last answer stands
  };
  Kind kind = Kind::kFailed;
  std::vector<std::string> hosts;  // kOk: numeric (inet_ntop), sorted, without duplicates
  std::string error;               // otherwise: why, as c-ares says it
};

struct ResolverOptions {
  // "127.0.0.1:5353,[::1]:53" (ares_set_servers_ports_csv); empty: /etc/resolv.conf.
  std::string servers;
  uint64_t timeout_ms = 5000;  // one resolution's whole budget, retries included
};

class Resolver {
 public:
  using Callback = std::function<void(const Resolved&)>;

  explicit Resolver(uv_loop_t* loop);
  ~Resolver();  // close() if not done
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  Status init(const ResolverOptions& options);
  // A and AAAA of `host`. `done` runs on the loop, possibly before resolve() returns (a name in
  // /etc/hosts); never after close().
  void resolve(const std::string& host, Callback done);
  // Drops pending queries (their callbacks are not called) and closes the handles; each handle's
  // memory is freed in its close callback, so the loop must run once more.
  void close();

 private:
  struct Poll;
  struct Query;
  static void on_sock_state_cb(void* data, int fd, int readable, int writable);
  static void on_poll_cb(uv_poll_t* handle, int status, int events);
  static void on_timer_cb(uv_timer_t* handle);
  static void on_addrinfo_cb(void* arg, int status, int timeouts, ares_addrinfo* result);
  void on_sock_state(int fd, bool readable, bool writable);
  void rearm_timer();

  uv_loop_t* loop_;
  ResolverOptions options_;
  ares_channeldata* channel_ = nullptr;
  uv_timer_t* timer_ = nullptr;     // c-ares' own timeouts
  std::map<int, Poll*> polls_;      // one per socket c-ares asked us to watch
};

// Every host of `hosts` through a channel of its own, blocking the calling thread for at most
// options.timeout_ms (start and reload: the loop is not running, or is inside a callback).
std::vector<Resolved> resolve_now(const ResolverOptions& options, const std::vector<std::string>& hosts);

// A query's outcome from c-ares' status and answer (exposed for tests).
Resolved to_resolved(int status, const ares_addrinfo* result);

}  // namespace limpet::net
