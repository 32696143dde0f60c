#include "limpet/runtime/pid_file.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace limpet::runtime {

std::optional<pid_t> read_pid_file(const std::string& path) {
  std::ifstream in(path);
  long pid = 0;
  if (!(in >> pid) || pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

Status write_pid_file(const std::string& path, pid_t pid) {
  const std::string tmp = path + ".tmp." + std::to_string(pid);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << pid << "\n";
    out.flush();
    if (!out) {
      ::unlink(tmp.c_str());
      return Status::fail("cannot write pid file " + path + ": " + std::strerror(errno));
    }
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    return Status::fail("cannot write pid file " + path + ": " + why);
  }
  return Status::ok();
}

bool remove_pid_file_if_ours(const std::string& path, pid_t pid) {
  if (path.empty() || read_pid_file(path) != pid) return false;
  return ::unlink(path.c_str()) == 0;
}

bool move_pid_file_if_ours(const std::string& from, const std::string& to, pid_t pid) {
  if (from.empty() || read_pid_file(from) != pid) return false;
  return ::rename(from.c_str(), to.c_str()) == 0;
}

}  // namespace limpet::runtime
