// Command line: -c FILE, -t, -s SIGNAL, -v, -h. Main thread only.
#pragma once

namespace limpet::app {

int run_cli(int argc, char** argv);

}  // namespace limpet::app
