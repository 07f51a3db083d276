#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need, from nothing, using only the registries
# this project can reach (PyPI, npm, Debian). Idempotent: every step is skipped when its result
# already exists, so a second run costs well under a second. Exports nothing: callers source
# scripts/env.sh afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
BUN_VERSION=1.4.4 # reflex 0.10.1 needs bun >= 1.4.4 (or node >= 22.22; Debian's node is 20)

NODE_MAJOR=22     # reflex 0.10.1 warns (twice a run) when `node` is older than 22.22
log() { printf '[bootstrap] %s\n' "$*" >&2; }
# shellcheck source=scripts/apt_wait.sh
. scripts/apt_wait.sh

# 1. Browser for the e2e tests: Debian's chromium and its matching chromedriver. Selenium is
#    always handed these paths, so its "Selenium Manager" never tries to download a driver.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  log "installing chromium + chromedriver (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  # `update` fails at once on a held lock, so wait for it (saying who holds it); the lock
  # timeout lets `install` queue behind another apt run.
  apt_get_update
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium chromium-driver
fi

# 1b. PostgreSQL server binaries for the tests and benchmarks that run the local server on
#     PostgreSQL: they start a throwaway cluster themselves (initdb/pg_ctl on a free loopback
#     port, as the `postgres` user the package creates); Debian's own cluster is not used.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  log "installing postgresql (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  apt_get_update  # waits for another apt run's lock (see 1.)
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends postgresql
fi

# 1c. Redis for the tests of the Redis query store: they start throwaway redis-server instances
#     themselves (free loopback port, temporary directory, no persistence); the Debian
#     package's own service is not used.
if ! command -v redis-server >/dev/null; then
  log "installing redis-server (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  apt_get_update  # waits for another apt run's lock (see 1.)
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends redis-server
fi

# 2. Python: a project venv with the package and its dev extra. The stamp holds a hash of
#    pyproject.toml, so the install re-runs when dependencies change and is skipped otherwise.
stamp=.venv/.bootstrap-pyproject.sha256
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
if [[ "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  log "pip install -e .[dev]"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
  echo "$want" >"$stamp"
fi

# 3. bun from the npm registry (Reflex would otherwise fetch it with a script from the internet,
#    which cannot work here). .tools/bin/bun is a stable link that scripts/env.sh puts on PATH.
bun_ok() { [[ "$("$1" --version 2>/dev/null)" == "$BUN_VERSION" ]]; }
if ! bun_ok .tools/bin/bun; then
  log "npm install bun@$BUN_VERSION into .tools/bun"
  npm install --prefix .tools/bun --no-audit --no-fund --loglevel=error "bun@$BUN_VERSION" >/dev/null
  mkdir -p .tools/bin
  # The .bin shim is only usable when bun's postinstall ran (it swaps in the native binary);
  # otherwise (e.g. npm's ignore-scripts) the binary sits in the platform package.
  for candidate in .tools/bun/node_modules/.bin/bun .tools/bun/node_modules/@oven/bun-linux-*/bin/bun; do
    if bun_ok "$candidate"; then
      ln -sfn "../${candidate#.tools/}" .tools/bin/bun  # relative: survives moving the repo
      break
    fi
  done
  bun_ok .tools/bin/bun || { log "no working bun $BUN_VERSION found under .tools/bun"; exit 1; }
fi

# 4. Node.js >= 22.22 from the npm registry, first on PATH via .tools/bin (scripts/env.sh).
#    bun still installs the packages and runs `reflex run`'s frontend; Reflex only checks
#    `node --version`, and with Debian's node 20 it warns twice per run that Node.js is out of
#    date (and forces bun's own runtime with --bun). With this node the warning is gone and the
#    dev server runs on the node it expects.
node_ok() { [[ "$("$1" --version 2>/dev/null)" =~ ^v${NODE_MAJOR}\.(2[2-9]|[3-9][0-9])\. ]]; }
if ! node_ok .tools/bin/node; then
  log "npm install node@$NODE_MAJOR into .tools/node"
  npm install --prefix .tools/node --no-audit --no-fund --loglevel=error "node@$NODE_MAJOR" >/dev/null
  mkdir -p .tools/bin
  ln -sfn ../node/node_modules/.bin/node .tools/bin/node
  node_ok .tools/bin/node || { log "no working node $NODE_MAJOR.22+ under .tools/node"; exit 1; }
fi
