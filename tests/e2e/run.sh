#!/usr/bin/env bash
# Runs the e2e suite: installs tests/e2e/node_modules from package-lock.json when it is missing
# or was installed from another lock file, then `node run_e2e.js` (or E2E_SCRIPT, e.g. run_scale.js,
# with this script's arguments). LIMPET_BIN names the binary;
# E2E_TLS=1 makes it the TLS run (see run_e2e.js), which needs the `openssl` command.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# A relative LIMPET_BIN (build/limpet) names a file relative to the caller's directory, not this one.
if [[ -n "${LIMPET_BIN:-}" && "$LIMPET_BIN" != /* ]]; then LIMPET_BIN="$PWD/$LIMPET_BIN"; export LIMPET_BIN; fi
cd "$here"

tools=(node npm redis-server)
[[ "${E2E_TLS:-}" == 1 ]] && tools+=(openssl)
for tool in "${tools[@]}"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "e2e: $tool not found: install Debian packages nodejs npm redis-server openssl (scripts/install-deps.sh)" >&2
    exit 1
  fi
done

# The lock file's hash, recorded after a successful `npm ci`, tells whether node_modules is stale.
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
stamp="node_modules/.limpet-lock-sha256"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "e2e: npm ci (node_modules missing or stale)"
  npm ci --silent --no-audit --no-fund
  echo "$want" > "$stamp"
fi

# ~900 clients plus their sockets through the proxy: more than the common 1024 default.
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

exec node "${E2E_SCRIPT:-run_e2e.js}" "$@"
