// Refuses to start on an address a live process already listens on: SO_REUSEPORT would let a
// second limpet bind it silently and split the traffic (and the learned sessions) with the
// first. Main thread, before the listening sockets are opened.
#pragma once

#include "limpet/config/config.hpp"
#include "limpet/util/result.hpp"

namespace limpet::runtime {

// Fails when something listens on `address`, naming it and, when /proc shows it, its pid and
// program. A probe socket without SO_REUSEPORT is bound and closed: a listening socket on the
// address (or on the wildcard of its family) makes the bind fail; TIME_WAIT leftovers do not.
Status check_address_free(const config::Address& address, const char* what);

}  // namespace limpet::runtime
