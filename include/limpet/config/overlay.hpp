// What the running process lays over the file's configuration until the next reload: the
// addresses backend names resolved to (runtime/discovery) and the admin API's backend changes.
// The effective configuration, the one snapshots are built from, is a pure function of the file
// and the overlay, so a DNS change and an admin change are published exactly as a reload is.
// Plain data; the main thread owns the running one.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "limpet/config/config.hpp"

namespace limpet::config {

// What a configured backend's name resolved to.
struct ResolvedName {
  std::string host;  // the name and port that were resolved: a reload that changes them resolves again
  uint16_t port = 0;
  std::vector<std::string> ips;  // numeric, canonical, sorted; empty: the name is gone (NXDOMAIN)
};

// The admin API's changes to one upstream.
struct AdminChanges {
  std::map<std::string, BackendConfig> added;  // backends the file does not name, by name
  std::map<std::string, uint32_t> weights;     // by backend name, or by a configured name for all its addresses
  std::set<std::string> removed;               // the same names
};

struct Overlay {
  std::map<std::string, std::map<std::string, ResolvedName>> resolved;  // by upstream, then backend name
  std::map<std::string, AdminChanges> admin;                            // by upstream
};

// "NAME/IP:PORT": the backend one address of a name becomes. Stable while the address stays,
// so the ring (keyed by backend name) keeps every other backend's keys in place.
std::string expanded_name(const std::string& name, const Address& address);

// `file` with `overlay` applied: each backend whose address is a name becomes one backend per
// address it resolved to (none while it resolves to nothing), NAME/IP:PORT with the configured
// weight; then the admin's removals and weights (by backend name or by configured name), then
// its additions.
Config effective_config(const Config& file, const Overlay& overlay);

}  // namespace limpet::config
