#!/usr/bin/env bash
# Installs everything `make demo` and `make test` need, from nothing, using only the registries
# this project can reach (PyPI, npm, Debian). Idempotent: every step is skipped when its result
# already exists, so a second run costs well under a second. Exports nothing: callers source
# scripts/env.sh afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
BUN_VERSION=1.4.4 # reflex 0.10.1 needs bun >= 1.4.4 (or node >= 22.22; Debian's node is 20)

log() { printf '[bootstrap] %s\n' "$*" >&2; }

# 1. Browser for the e2e tests: Debian's chromium and its matching chromedriver. Selenium is
#    always handed these paths, so its "Selenium Manager" never tries to download a driver.
if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
  log "installing chromium + chromedriver (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  # The lock timeout lets us queue behind another apt run instead of failing at once.
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends chromium chromium-driver
fi

# 1b. PostgreSQL server binaries for the tests and benchmarks that run the local server on
#     PostgreSQL: they start a throwaway cluster themselves (initdb/pg_ctl on a free loopback
#     port, as the `postgres` user the package creates); Debian's own cluster is not used.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  log "installing postgresql (apt)"
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get -o DPkg::Lock::Timeout=600 update -q
  $sudo env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends postgresql
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
