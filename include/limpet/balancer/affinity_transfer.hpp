// The affinity table's hand-over format: learned sids with their backend *name* and the time they
// have left, so a new process (other backend ids, maybe another config) keeps routing them.
// Versioned; see doc/architecture.md "Binary upgrade". Pure functions, any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "limpet/balancer/affinity.hpp"
#include "limpet/balancer/backend.hpp"
#include "limpet/util/result.hpp"

namespace limpet::balancer::affinity_transfer {

// Bumped on any incompatible change; a reader refuses a newer version with a clear message.
constexpr uint16_t kVersion = 1;

struct Record {
  std::string sid;
  std::string backend;  // BackendState::name
  AffinityTable::Millis remaining{0};
  AffinityTable::Origin origin = AffinityTable::Origin::kLocal;
};

// Every live entry of `table`, named through `registry`.
std::string encode_table(const AffinityTable& table, const BackendRegistry& registry);
// The same format for a list (the old process's learns while it drains).
std::string encode_records(const std::vector<Record>& records);

struct ImportStats {
  size_t imported = 0;
  size_t already_known = 0;    // the table had the sid (its own entry is newer)
  size_t unknown_backend = 0;  // the backend is not in this process's configuration
};

// Backend id for a name in the running configuration, nullopt if it has none by that name.
using ResolveBackend = std::function<std::optional<uint32_t>(std::string_view name)>;

// Restores every record of `bytes` into `table`. Fails (and imports nothing) on a malformed or
// newer-version input.
Result<ImportStats> decode_into(std::string_view bytes, AffinityTable& table, const ResolveBackend& resolve);

}  // namespace limpet::balancer::affinity_transfer
