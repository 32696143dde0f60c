#include "redis_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>

namespace limpet::store::testing {
namespace {

uint16_t free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

std::string run(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

RedisServer::RedisServer(std::vector<std::string> extra) : extra_(std::move(extra)), port_(free_port()) {
  char tmpl[] = "/tmp/limpet-redis-XXXXXX";
  dir_ = mkdtemp(tmpl);
}

RedisServer::~RedisServer() {
  kill();
  run("rm -rf '" + dir_ + "'");
}

void RedisServer::enable_tls() {
  tls_ = true;
  const std::string d = "'" + dir_ + "'";
  run("cd " + d + " && openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 "
      "-subj /CN=limpet-test-ca 2>/dev/null && "
      "openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null && "
      "printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
      "-extfile san.ext 2>/dev/null");
}

bool RedisServer::start() {
  const std::string conf = dir_ + "/redis.conf";
  {
    std::ofstream f(conf);
    f << "bind 127.0.0.1\nsave \"\"\nappendonly no\ndir " << dir_ << "\n";
    if (tls_) {
      f << "port 0\ntls-port " << port_ << "\ntls-cert-file " << dir_ << "/server.pem\ntls-key-file " << dir_
        << "/server.key\ntls-ca-cert-file " << dir_ << "/ca.pem\ntls-auth-clients no\n";
    } else {
      f << "port " << port_ << "\n";
    }
    for (const auto& line : extra_) f << line << "\n";
  }
  pid_ = fork();
  if (pid_ == 0) {
    const std::string log = dir_ + "/redis.log";
    freopen(log.c_str(), "w", stdout);
    freopen(log.c_str(), "a", stderr);
    execlp("redis-server", "redis-server", conf.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      error_ = "redis-server exited: " + run("cat '" + dir_ + "/redis.log'");
      return false;
    }
    if (cli({"PING"}).find("PONG") != std::string::npos || cli({"PING"}).find("NOAUTH") != std::string::npos) {
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling for readiness, bounded
  }
  error_ = "redis-server did not answer PING within 10 s";
  return false;
}

void RedisServer::signal(int sig) const {
  if (pid_ > 0) ::kill(pid_, sig);
}

void RedisServer::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string RedisServer::cli(const std::vector<std::string>& args, const std::vector<std::string>& auth) const {
  std::string cmd = "redis-cli -h 127.0.0.1 -p " + std::to_string(port_);
  if (tls_) cmd += " --tls --cacert '" + ca_file() + "'";
  for (const auto& a : auth) cmd += " " + a;
  for (const auto& a : args) cmd += " '" + a + "'";
  return run(cmd + " 2>&1");
}

}  // namespace limpet::store::testing
