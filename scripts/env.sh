# Source me (`. scripts/env.sh`) after scripts/bootstrap.sh: the environment in which Reflex,
# pytest and the e2e browser run without ever reaching for the internet.
_billing_ui_root="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"

export VIRTUAL_ENV="$_billing_ui_root/.venv"
export PATH="$_billing_ui_root/.venv/bin:$_billing_ui_root/.tools/bin:$PATH"

# Reflex installs bun with a script downloaded from the internet unless it finds bun >= 1.4.4.
# Point it at the npm-installed one (also on PATH above, which Reflex falls back to).
export REFLEX_BUN_PATH="$_billing_ui_root/.tools/bin/bun"
# Explicit: a reflex.lock/ holding only package-lock.json would silently switch Reflex to npm,
# which then fails on Debian's node 20.
export REFLEX_USE_NPM=0
# No phoning home: telemetry, the PyPI "newer version" check.
export REFLEX_TELEMETRY_ENABLED=false
export REFLEX_CHECK_LATEST_VERSION=false
# Without this Reflex times requests to two npm registries to pick the "best" one.
NPM_CONFIG_REGISTRY="${NPM_CONFIG_REGISTRY:-$(npm config get registry)}"
export NPM_CONFIG_REGISTRY
# Belt and braces: Selenium Manager must never download a driver or browser (tests pass
# /usr/bin/chromedriver and /usr/bin/chromium explicitly anyway).
export SE_OFFLINE=true

unset _billing_ui_root
