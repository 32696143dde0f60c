// Thin shell: everything lives in app/.
#include "limpet/app/cli.hpp"

int main(int argc, char** argv) { return limpet::app::run_cli(argc, argv); }
