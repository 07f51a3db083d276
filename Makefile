# Every target bootstraps first (a no-op when already done), then runs inside scripts/env.sh.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: bootstrap demo test lint bench

bootstrap:
	@bash scripts/bootstrap.sh

# The demo app (billing_ui/billing_ui.py, configured by rxconfig.py) from the repo root.
demo: bootstrap
	@test -f rxconfig.py || { echo "rxconfig.py is missing: the demo app is not set up yet" >&2; exit 1; }
	$(ENV) reflex run

# pytest takes its options from [tool.pytest.ini_options]; add more with PYTEST_ARGS="...".
test: bootstrap
	$(ENV) python -m pytest $(PYTEST_ARGS)

lint: bootstrap
	$(ENV) ruff check . && mypy billing_ui

bench: bootstrap
	$(ENV) if [[ -f bench/run_all.py ]]; then python bench/run_all.py; \
	  elif [[ -f bench/__main__.py ]]; then python -m bench; \
	  else echo "no benchmarks yet (bench/run_all.py)"; fi
