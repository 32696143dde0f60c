#!/usr/bin/env bash
# The README's second command: install what is missing, build, run the whole test suite
# (unit, integration, e2e: all registered with `meson test`, each with its own timeout).
#
#   bash scripts/test.sh                        build/ (debugoptimized, -Werror), every test
#   bash scripts/test.sh --suite integration    arguments go to `meson test`
#   SANITIZE=1 bash scripts/test.sh             ASan + UBSan build in build-asan/
#
# Environment: BUILD_DIR (default build, or build-asan with SANITIZE=1), JOBS (ninja -j),
# LIMPET_SKIP_DEPS=1 to skip the package step. Exits non-zero if the build or any test fails; the full log is in
# BUILD_DIR/meson-logs/testlog.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

bash scripts/install-deps.sh

if [[ "${SANITIZE:-}" == 1 ]]; then
  builddir="${BUILD_DIR:-build-asan}"
  # No -Werror here: GCC's optimizer warnings change under -fsanitize and are not ours to fix.
  options=(--buildtype=debugoptimized -Db_sanitize=address,undefined -Db_lundef=false)
else
  builddir="${BUILD_DIR:-build}"
  options=(--buildtype=debugoptimized -Dwerror=true)
fi

if [[ -f "$builddir/build.ninja" ]]; then
  meson setup --reconfigure "$builddir" "${options[@]}" ||
    meson setup --wipe "$builddir" "${options[@]}"
else
  meson setup "$builddir" "${options[@]}"
fi
ninja -C "$builddir" ${JOBS:+-j "$JOBS"}

echo "test.sh: meson test -C $builddir $*" >&2
meson test -C "$builddir" --print-errorlogs "$@"
