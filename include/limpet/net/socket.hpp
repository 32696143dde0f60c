// Socket helpers: numeric address resolution, per-worker SO_REUSEPORT listening sockets (libuv
// 1.44 has no reuseport flag), peer address text. Any thread.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <string>

#include "limpet/util/result.hpp"

namespace limpet::net {

struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

// Numeric IPv4/IPv6 literal (no DNS on the data plane).
Result<SocketAddress> resolve_numeric(const std::string& host, uint16_t port);
// Socket bound with SO_REUSEADDR + SO_REUSEPORT, non-blocking, not yet listening.
Result<int> open_reuseport_socket(const SocketAddress& addr);
// "127.0.0.1" / "::1" of a sockaddr (no port).
std::string ip_text(const sockaddr* addr);
// Peer or local address of a connected fd-backed libuv TCP handle.
std::string peer_ip(const void* uv_tcp_handle);
uint16_t local_port(const void* uv_tcp_handle);

}  // namespace limpet::net
