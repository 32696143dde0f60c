// The effective configuration as TOML (limpet -T): every key with its value after defaults,
// includes and ${ENV} applied, in a form the loader reads back to the same Config. Any thread.
#pragma once

#include <string>

#include "limpet/config/config.hpp"

namespace limpet::config {

std::string to_toml(const Config& config);

}  // namespace limpet::config
