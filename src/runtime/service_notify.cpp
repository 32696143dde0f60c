#include "limpet/runtime/service_notify.hpp"

#include <time.h>

#if LIMPET_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

namespace limpet::runtime::service_notify {
namespace {

void send(const std::string& message) {
#if LIMPET_HAVE_SYSTEMD
  sd_notify(0, message.c_str());
#else
  (void)message;
#endif
}

std::string status_line(const std::string& status) {
  std::string line = "STATUS=";
  for (char c : status) line += c == '\n' ? ' ' : c;  // one line: the protocol is newline-separated
  return line;
}

}  // namespace

void ready(const std::string& status) { send("READY=1\n" + status_line(status)); }

void reloading() {
  // MONOTONIC_USEC: what systemd 253+ (Type=notify-reload) expects alongside RELOADING=1.
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  const unsigned long long usec = static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
                                  static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL;
  send("RELOADING=1\nMONOTONIC_USEC=" + std::to_string(usec) + "\n" + status_line("reloading"));
}

// A failed reload keeps the running configuration: still ready, the result is in STATUS.
void reloaded(const std::string& status) {
  send("READY=1\n" + status_line(status));
}

void stopping() { send("STOPPING=1\n" + status_line("stopping")); }

void main_pid(pid_t pid, const std::string& status) {
  send("MAINPID=" + std::to_string(pid) + "\n" + status_line(status));
}

}  // namespace limpet::runtime::service_notify
