# Every target bootstraps first (a no-op when already done), then runs inside scripts/env.sh.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
ENV := . scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: bootstrap demo demo-scaled test lint reflex-range bench bench-smoke bench-docs clean

bootstrap:
	@bash scripts/bootstrap.sh

# The demo app (billing_ui/billing_ui.py, configured by rxconfig.py) from the repo root.
demo: bootstrap
	@test -f rxconfig.py || { echo "rxconfig.py is missing: the demo app is not set up yet" >&2; exit 1; }
	@[[ -d .web ]] || echo '[demo] first run: Reflex now sets up .web/ (a minute). Its hint "Run `uv run reflex run`" means `make demo` here; its "Compiling ... 19/18" is its own miscount (harmless).' >&2
	$(ENV) reflex run

# The demo deployed as at scale, all on this machine (billing_ui/demo/scaled.py): a throwaway
# Redis, the local billing server on a throwaway PostgreSQL, and the demo in Reflex's production
# mode with 2 backend worker processes. Prints the URL; Ctrl-C stops everything.
demo-scaled: bootstrap
	$(ENV) python -m billing_ui.demo.scaled $(DEMO_ARGS)

# pytest takes its options from [tool.pytest.ini_options]; add more with PYTEST_ARGS="...".
test: bootstrap
	$(ENV) python -m pytest $(PYTEST_ARGS)

lint: bootstrap
	$(ENV) ruff check . && mypy billing_ui bench

# The lowest and newest Reflex that pyproject.toml allows: a version other than .venv's gets a
# venv of its own (.tools/reflex-<version>) and a bounded states + toolchain-smoke run.
reflex-range: bootstrap
	$(ENV) python scripts/reflex_range.py

# Every benchmark at its documented size: one JSON file per run in bench/results/, then the
# tables of docs/benchmarks.md, docs/reliability.md and README.md regenerated from it (also when one failed: the
# others' figures are recorded). CPU-heavy (minutes).
bench: bootstrap
	$(ENV) status=0; python -m bench || status=$$?; python -m bench.docs; exit $$status

# Every benchmark at a tiny size: checks each runs and reports every figure (CPUs + 2 lanes, one
# shared throwaway PostgreSQL; the summary gives each benchmark's wall and CPU seconds, the
# total and a verdict against the goal: under 60 s on an idle 2-CPU machine).
# `make test` runs it too (tests/benchmarks).
bench-smoke: bootstrap
	$(ENV) out="$$(mktemp -d)" && trap 'rm -rf "$$out"' EXIT && python -m bench --smoke --out "$$out"

# Regenerate the docs' tables from the committed results (no benchmark runs).
bench-docs: bootstrap
	$(ENV) python -m bench.docs

# The demo's data (.data/: billing.db and the track outbox, with their WAL files; the next
# `make demo` seeds the customers again) and Reflex's build output. Keeps .venv/ and .tools/.
clean:
	rm -rf .data .web .states
