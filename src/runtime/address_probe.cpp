#include "limpet/runtime/address_probe.hpp"

#include <dirent.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "limpet/net/socket.hpp"

namespace limpet::runtime {
namespace {

// Inodes of the sockets listening on `port`, from /proc/net/tcp and tcp6.
std::set<std::string> listening_inodes(uint16_t port) {
  std::set<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::istringstream fields(line);
      std::string slot, local, remote, state, queues, timer, retransmits, uid, timeout, inode;
      fields >> slot >> local >> remote >> state >> queues >> timer >> retransmits >> uid >> timeout >> inode;
      const size_t colon = local.rfind(':');
      if (state != "0A" || colon == std::string::npos) continue;  // 0A = LISTEN
      if (std::stoul(local.substr(colon + 1), nullptr, 16) == port) inodes.insert(inode);
    }
  }
  return inodes;
}

std::string read_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// "pid 1234 (limpet)" of the first process holding one of `inodes`; "" when /proc does not say
// (another user's process, or a sandbox that hides /proc).
std::string holder_of(const std::set<std::string>& inodes) {
  if (inodes.empty()) return "";
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return "";
  std::string found;
  while (dirent* d = ::readdir(proc)) {
    const std::string pid = d->d_name;
    if (pid.find_first_not_of("0123456789") != std::string::npos || pid == std::to_string(::getpid())) continue;
    const std::string fd_dir = "/proc/" + pid + "/fd";
    DIR* fds = ::opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = ::readdir(fds)) {
      char link[64] = {};
      const std::string path = fd_dir + "/" + f->d_name;
      const ssize_t n = ::readlink(path.c_str(), link, sizeof link - 1);
      if (n <= 9 || std::strncmp(link, "socket:[", 8) != 0) continue;
      if (inodes.count(std::string(link + 8, static_cast<size_t>(n) - 9))) {
        found = "pid " + pid + " (" + read_line("/proc/" + pid + "/comm") + ")";
        break;
      }
    }
    ::closedir(fds);
    if (!found.empty()) break;
  }
  ::closedir(proc);
  return found;
}

}  // namespace

Status check_address_free(const config::Address& address, const char* what) {
  auto addr = net::resolve_numeric(address.host, address.port);
  if (!addr) return Status::fail(addr.message());
  int fd = ::socket(addr->storage.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::fail(std::string("socket: ") + std::strerror(errno));
  int on = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  const int rc = ::bind(fd, addr->get(), addr->length);
  const int err = errno;
  ::close(fd);
  if (rc == 0 || err != EADDRINUSE) return Status::ok();  // other errors: the real bind reports them
  std::string holder = holder_of(listening_inodes(address.port));
  return Status::fail(std::string(what) + " " + address.text + " is already in use by " +
                      (holder.empty() ? "another process" : holder) +
                      ": refusing to share it (a second limpet would split the traffic and its "
                      "learned sessions); stop that process, upgrade it with `limpet -s upgrade`, or "
                      "set server.shared_listeners = true to share the address on purpose");
}

}  // namespace limpet::runtime
