"""Run every benchmark in ``bench/`` and record the run in one JSON file.

    python -m bench                      # make bench: full size, writes bench/results/<UTC>.json
    python -m bench --smoke --out DIR    # make bench-smoke: tiny size, checks each one runs
    python -m bench client_overhead      # only the named benchmarks

A benchmark is a module of ``bench/`` (not starting with ``_``) that defines
``run(*, smoke=False)``; it is found by reading the source, so adding a module is enough. Each
runs in its own process (``python -m bench.<module> --json ...``): benchmarks configure
process-wide things (Reflex states, event loops, a browser) and must not see each other's.
The JSON holds the machine, the versions that can move a figure, and every benchmark's result
(or its failure); ``python -m bench.docs`` regenerates the docs' tables from it.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._harness import REPO, BadResult, check_result, load_average, machine, versions

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
SMOKE_TIMEOUT = 120.0
"""Seconds one benchmark may take at smoke size before it counts as failed."""


def discover() -> list[str]:
    """Names of the modules in bench/ that define a top-level ``run`` taking ``smoke``."""
    names = []
    for path in sorted(BENCH.glob("*.py")):
        if path.name.startswith("_"):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "run":
                args = node.args
                if any(a.arg == "smoke" for a in [*args.kwonlyargs, *args.args]):
                    names.append(path.stem)
    return names


def run_one(name: str, smoke: bool, scratch: Path) -> dict[str, Any]:
    """Run ``bench.<name>`` in its own process; its result, or ``{"error": ...}``."""
    out = scratch / f"{name}.json"
    cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
    if smoke:
        cmd.append("--smoke")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, timeout=SMOKE_TIMEOUT if smoke else None)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {SMOKE_TIMEOUT:g} s"}
    seconds = round(time.perf_counter() - start, 1)
    if proc.returncode != 0 or not out.exists():
        return {"error": f"exit status {proc.returncode}", "seconds": seconds}
    try:
        result = check_result(json.loads(out.read_text()))
    except (ValueError, BadResult) as exc:
        return {"error": f"bad result: {exc}", "seconds": seconds}
    return {**result, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks, not figures")
    parser.add_argument("--out", type=Path, help=f"folder for the JSON (default {RESULTS})")
    args = parser.parse_args(argv)
    found = discover()
    unknown = sorted(set(args.names) - set(found))
    if unknown:
        parser.error(f"no benchmark {unknown}; found {found}")
    names = args.names or found
    started = datetime.now(UTC)
    record: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "smoke": args.smoke,
        "machine": machine(),
        "versions": versions(),
        "benchmarks": {},
    }
    print(f"bench: {len(names)} benchmark(s) {'at smoke size' if args.smoke else ''}: {names}")
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            print(f"\n=== {name} ===", flush=True)
            record["benchmarks"][name] = run_one(name, args.smoke, Path(tmp))
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    record["load_average_after"] = load_average()
    folder = args.out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    failed = {n: r["error"] for n, r in record["benchmarks"].items() if "error" in r}
    print("\n=== summary ===")
    for name, result in record["benchmarks"].items():
        print(f"{name}: {result.get('error') or result['verdict']}")
    print(f"wrote {path}")
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
