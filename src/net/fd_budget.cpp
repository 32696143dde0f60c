#include "limpet/net/fd_budget.hpp"

#include <sys/resource.h>

namespace limpet::net {

uint64_t FdBudget::raise_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : static_cast<uint64_t>(rl.rlim_cur);
}

FdBudget& fd_budget() {
  static FdBudget budget;
  return budget;
}

}  // namespace limpet::net
