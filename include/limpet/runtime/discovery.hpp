// Backends by name (issue 16): which configured backends have a DNS name for an address, when
// each name is asked again, and what an answer changes. Start and reload resolve the names they
// do not know yet (blocking the main loop up to resolver_timeout, never a worker); afterwards
// every name is asked each `resolve` interval on the main loop, and an answer that changes its
// addresses goes to the server, which publishes it the way a reload is published.
// Main thread only.
#pragma once

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "limpet/config/config.hpp"
#include "limpet/config/overlay.hpp"
#include "limpet/net/resolver.hpp"
#include "limpet/util/result.hpp"

namespace limpet::runtime {

using ResolvedNames = std::map<std::string, std::map<std::string, config::ResolvedName>>;

net::ResolverOptions resolver_options(const config::ServerConfig& server);

class Discovery {
 public:
  // Publishes a changed answer for backend `backend` of `upstream`; fails when it cannot be
  // published (an upstream left without backends), and the running answer then stays.
  using Apply = std::function<Status(const std::string& upstream, const std::string& backend,
                                     const config::ResolvedName& next)>;

  Discovery(uv_loop_t* loop, Apply apply);
  ~Discovery();
  Discovery(const Discovery&) = delete;
  Discovery& operator=(const Discovery&) = delete;

  // The names of `file`: what `known` has for the same name and port, the rest resolved now.
  // Fails naming the backend (file:line) when a name does not resolve to an address.
  static Result<ResolvedNames> resolve_new(const config::Config& file, const ResolvedNames& known);
  // `file` runs now with `resolved`: ask its names again on their intervals, through the
  // servers its [server] resolver names.
  Status schedule(const config::Config& file, const ResolvedNames& resolved);
  // Asks the names that are due (the housekeeping timer calls it every second).
  void tick();
  // Pending answers are dropped; handles are freed in their close callbacks.
  void close();

 private:
  struct Entry {
    std::string upstream;
    std::string backend;
    std::string host;
    uint16_t port = 0;
    uint64_t interval_ms = 0;
    uint64_t due_ms = 0;
    uint64_t serial = 0;  // of the schedule that asked: an answer for a replaced entry is dropped
    bool asking = false;
    std::vector<std::string> ips;  // as published
    std::string problem;           // the last one logged; logged again only when it changes
  };
  void on_answer(const std::pair<std::string, std::string>& key, uint64_t serial, const net::Resolved& r);
  void note(Entry& e, const std::string& problem);

  uv_loop_t* loop_;
  Apply apply_;
  std::unique_ptr<net::Resolver> resolver_;
  net::ResolverOptions options_;
  std::map<std::pair<std::string, std::string>, Entry> entries_;
  uint64_t serial_ = 0;
};

}  // namespace limpet::runtime
