#include "limpet/net/socket.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <unistd.h>
#include <uv.h>

#include <cerrno>
#include <cstring>

namespace limpet::net {

Result<SocketAddress> resolve_numeric(const std::string& host, uint16_t port) {
  SocketAddress out;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&out.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&out.storage);
  if (uv_ip4_addr(host.c_str(), port, v4) == 0) {
    out.length = sizeof(sockaddr_in);
  } else if (uv_ip6_addr(host.c_str(), port, v6) == 0) {
    out.length = sizeof(sockaddr_in6);
  } else {
    return Result<SocketAddress>::fail("not a numeric IP address: " + host);
  }
  return out;
}

Result<int> open_reuseport_socket(const SocketAddress& addr) {
  int fd = ::socket(addr.storage.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Result<int>::fail(std::string("socket: ") + std::strerror(errno));
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  if (::setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof on) != 0 ||
      ::bind(fd, addr.get(), addr.length) != 0) {
    std::string err = std::strerror(errno);
    ::close(fd);
    return Result<int>::fail(err);
  }
  return fd;
}

std::string ip_text(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET) {
    uv_ip4_name(reinterpret_cast<const sockaddr_in*>(addr), buf, sizeof buf);
  } else if (addr->sa_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(addr), buf, sizeof buf);
  }
  return buf;
}

std::string peer_ip(const void* handle) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getpeername(static_cast<const uv_tcp_t*>(handle), reinterpret_cast<sockaddr*>(&ss),
                         &len) != 0) {
    return "-";
  }
  return ip_text(reinterpret_cast<sockaddr*>(&ss));
}

uint16_t local_port(const void* handle) {
  sockaddr_storage ss{};
  int len = sizeof ss;
  if (uv_tcp_getsockname(static_cast<const uv_tcp_t*>(handle), reinterpret_cast<sockaddr*>(&ss),
                         &len) != 0) {
    return 0;
  }
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
}

}  // namespace limpet::net
