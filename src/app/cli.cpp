#include "limpet/app/cli.hpp"

namespace limpet::app {

int run_cli(int, char**) { return 0; }

}  // namespace limpet::app
