// The systemd notification protocol (sd_notify) for Type=notify: ready once the listeners are
// bound, reloading and its result, stopping, and the main pid moving to the new process of a
// binary upgrade. No-ops outside systemd (no NOTIFY_SOCKET) and in builds without libsystemd.
// Main thread.
#pragma once

#include <sys/types.h>

#include <string>

namespace limpet::runtime::service_notify {

void ready(const std::string& status);
void reloading();
// After reloading(): READY=1 again with the reload's result as STATUS.
void reloaded(const std::string& status);
void stopping();
// The upgraded process takes over: systemd tracks it from now on (NotifyAccess=main).
void main_pid(pid_t pid, const std::string& status);

}  // namespace limpet::runtime::service_notify
