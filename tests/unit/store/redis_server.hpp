// A real redis-server for the store's tests: started on a free loopback port in its own temp
// dir, with whatever extra configuration a test needs (requirepass, ACL users, TLS), stopped or
// killed on demand. start() waits (with a deadline) until the server answers PING.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace limpet::store::testing {

class RedisServer {
 public:
  // `extra`: "key value" lines appended to the server's config file.
  explicit RedisServer(std::vector<std::string> extra = {});
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // False (with the reason in error()) if it did not come up within 10 s.
  bool start();
  void kill();                    // SIGKILL, and reap it
  void signal(int sig) const;     // e.g. SIGSTOP / SIGCONT: alive but silent
  bool running() const { return pid_ > 0; }
  uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }
  const std::string& error() const { return error_; }
  // One command through redis-cli (for checks from outside limpet's client); its stdout.
  std::string cli(const std::vector<std::string>& args, const std::vector<std::string>& auth = {}) const;

  // Before start(): TLS only, with a CA and a server certificate for 127.0.0.1 made in dir().
  void enable_tls();
  std::string ca_file() const { return dir_ + "/ca.pem"; }

 private:
  std::vector<std::string> extra_;
  std::string dir_;
  std::string error_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
  bool tls_ = false;
};

}  // namespace limpet::store::testing
