#include "limpet/app/cli.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <fstream>
#include <string>
#include <vector>

#include "limpet/config/dump.hpp"
#include "limpet/config/loader.hpp"
#include "limpet/runtime/pid_file.hpp"
#include "limpet/runtime/server.hpp"
#include "limpet/config/overlay.hpp"
#include "limpet/runtime/snapshot.hpp"

namespace limpet::app {
namespace {

constexpr const char* kVersion = LIMPET_VERSION;
constexpr const char* kDefaultConfig = LIMPET_DEFAULT_CONFIG;  // sysconfdir/limpet/limpet.toml

void print_usage(FILE* out) {
  std::fprintf(out,
               "usage: limpet [-c FILE] [-t|-T] [-s stop|quit|reload|reopen|upgrade] [-v] [-h]\n"
               "  -c FILE   configuration file (default %s)\n"
               "  -t        check the configuration and exit (0: ok, 1: error)\n"
               "  -T        check it as -t does, and print the effective configuration (TOML, with\n"
               "            includes, ${ENV} and defaults applied)\n"
               "  -s SIG    signal the running limpet named by the config's pid_file: stop (fast),\n"
               "            quit (graceful), reload, reopen (logs), upgrade (start the binary anew)\n"
               "  -v        print the version and exit\n"
               "  -h        print this help and exit\n",
               kDefaultConfig);
}

// -t: everything a start would check short of binding sockets. -T (`print`) also writes the
// configuration as loaded, to stdout, and keeps the "ok" line off it so the output loads back.
int check_config(const std::string& path, bool print) {
  auto loaded = config::load_file(path);
  if (!loaded) {
    std::fprintf(stderr, "limpet: %s\n", loaded.message().c_str());
    return 1;
  }
  // Host names are never resolved here: each stands for one documentation address (192.0.2.1),
  // so that everything else about its upstream is checked as a start would.
  config::Overlay stand_ins;
  for (const auto& u : loaded->upstreams) {
    for (const auto& b : u.backends) {
      if (b.address.by_name) stand_ins.resolved[u.name][b.name] = {b.address.host, b.address.port, {"192.0.2.1"}};
    }
  }
  runtime::SharedState shared;
  shared.affinity = std::make_shared<balancer::AffinityTable>(shared.registry, 1);
  auto snapshot = runtime::build_snapshot(
      std::make_shared<const config::Config>(config::effective_config(*loaded, stand_ins)), shared, 1);
  if (!snapshot) {
    std::fprintf(stderr, "limpet: %s\n", snapshot.message().c_str());
    return 1;
  }
  if (print) std::fputs(config::to_toml(*loaded).c_str(), stdout);
  std::fprintf(print ? stderr : stdout, "limpet: configuration file %s: configuration ok\n", path.c_str());
  return 0;
}

struct NamedSignal {
  const char* name;
  int signum;
};
constexpr NamedSignal kNamedSignals[] = {
    {"stop", SIGTERM}, {"quit", SIGQUIT}, {"reload", SIGHUP}, {"reopen", SIGUSR1}, {"upgrade", SIGUSR2}};

// The command name of `pid` ("" when /proc does not say): a pid file left by a crash may name a
// process that reused the number.
std::string command_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

int send_signal(const std::string& path, const std::string& name) {
  int signum = 0;
  for (const auto& s : kNamedSignals) {
    if (name == s.name) signum = s.signum;
  }
  if (signum == 0) {
    std::fprintf(stderr, "limpet: -s expects stop, quit, reload, reopen or upgrade, got \"%s\"\n", name.c_str());
    return 1;
  }
  auto loaded = config::load_file(path);
  if (!loaded) {
    std::fprintf(stderr, "limpet: %s\n", loaded.message().c_str());
    return 1;
  }
  const std::string& pid_file = loaded->server.pid_file;
  if (pid_file.empty()) {
    std::fprintf(stderr, "limpet: %s sets no server.pid_file: cannot find the running limpet\n",
                 path.c_str());
    return 1;
  }
  auto pid = runtime::read_pid_file(pid_file);
  if (!pid) {
    std::fprintf(stderr, "limpet: cannot read a pid from %s: is limpet running?\n", pid_file.c_str());
    return 1;
  }
  // Never remove the file: it is the running limpet's (or a crashed one's, for the operator).
  if (::kill(*pid, 0) != 0 && errno == ESRCH) {
    std::fprintf(stderr, "limpet: %s names pid %d, which is not running (a stale pid file: limpet is not "
                 "running); nothing signalled, the file is left alone\n", pid_file.c_str(), static_cast<int>(*pid));
    return 1;
  }
  const std::string comm = command_of(*pid);
  if (!comm.empty() && comm.rfind("limpet", 0) != 0) {
    std::fprintf(stderr, "limpet: %s names pid %d, which is \"%s\", not limpet (a stale pid file whose number "
                 "was reused); nothing signalled\n", pid_file.c_str(), static_cast<int>(*pid), comm.c_str());
    return 1;
  }
  if (::kill(*pid, signum) != 0) {
    std::fprintf(stderr, "limpet: kill %d: %s\n", static_cast<int>(*pid), std::strerror(errno));
    return 1;
  }
  return 0;
}

}  // namespace

int run_cli(int argc, char** argv) {
  std::string config_path = kDefaultConfig;
  std::string signal_name;
  bool test_only = false;
  bool print_config = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "limpet: %s needs an argument\n", flag);
        return nullptr;
      }
      return argv[++i];
    };
    if (arg == "-h" || arg == "--help") {
      print_usage(stdout);
      return 0;
    } else if (arg == "-v" || arg == "--version") {
      std::printf("limpet %s\n", kVersion);
      return 0;
    } else if (arg == "-t" || arg == "-T") {
      test_only = true;
      print_config = arg == "-T";
    } else if (arg == "-c") {
      const char* v = value("-c");
      if (!v) return 1;
      config_path = v;
    } else if (arg == "-s") {
      const char* v = value("-s");
      if (!v) return 1;
      signal_name = v;
    } else {
      std::fprintf(stderr, "limpet: unknown option \"%s\"\n", arg.c_str());
      print_usage(stderr);
      return 1;
    }
  }
  try {
    if (test_only) return check_config(config_path, print_config);
    if (!signal_name.empty()) return send_signal(config_path, signal_name);
    runtime::Server server(config_path, std::vector<std::string>(argv, argv + argc));
    return server.run();
  } catch (const std::exception& e) {
    // Startup only: the data plane does not throw.
    std::fprintf(stderr, "limpet: %s\n", e.what());
    return 1;
  }
}

}  // namespace limpet::app
