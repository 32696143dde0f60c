// The keys limpet.toml accepts, listed from the loader's own reads, so documentation and tests can
// be checked against the code instead of a copy of it. Main thread (it runs the loader).
#pragma once

#include <string>
#include <vector>

#include "limpet/util/result.hpp"

namespace limpet::config {

// Every key the loader reads, as a dotted path from the top of the file, sorted: "server",
// "server.workers", "listener.tls.certificates.names", "upstream.backend.weight". A key that
// holds a table (or an array of tables) is listed besides the keys inside it. Fails when the
// built-in file it loads to find them does not set a key the loader reads: the keys of a new
// sub-table would go unlisted, so the file must be completed.
Result<std::vector<std::string>> known_keys();

}  // namespace limpet::config
