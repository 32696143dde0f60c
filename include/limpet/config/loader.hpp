// Loads and validates limpet.toml into config::Config. Main thread only (startup, -t, reload).
// The only module that includes toml11. Errors read "FILE:LINE:COL: what was expected".
#pragma once

#include <string>

#include "limpet/config/config.hpp"
#include "limpet/util/result.hpp"

namespace limpet::config {

Result<Config> load_file(const std::string& path);
// For tests and `-t` on generated text; `name` stands in for the file name in messages.
Result<Config> load_string(const std::string& text, const std::string& name);

}  // namespace limpet::config
