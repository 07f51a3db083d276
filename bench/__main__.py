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
import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench._harness import REPO, BadResult, check_result, load_average, machine, versions
from bench.server_process import SHARED_POSTGRES_ENV
from billing_ui.server.testing_postgres import temp_postgres

BENCH = REPO / "bench"
RESULTS = BENCH / "results"
SMOKE_TIMEOUT = 180.0
"""Seconds one benchmark may take at smoke size before it counts as failed (it may share the
machine with the other lane: see ``SMOKE_JOBS``)."""
SMOKE_JOBS = 3
"""Benchmarks run at once at smoke size (each is mostly process start-up and waiting; its
timings are not looked at): the Reflex ones in one lane, the others in the rest. A full run is
one at a time: figures need the machine."""
SLOW_FIRST = ("server_ingest", "crash_ingest", "db_ceiling", "peers", "http_ceiling")
"""The slowest benchmarks that start no Reflex app at smoke size (each 30-45 s of wall time
at load 11 on 2 CPUs, 2026-11-30): queued first, since a free lane takes the next one."""
REFLEX_MARKERS = ("_reflex_backend", "running_demo")
"""Source text of a benchmark that starts a Reflex app from the repo: those run one at a time
even at smoke size (they share the repo's Reflex build directories)."""


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


def starts_reflex(name: str) -> bool:
    text = (BENCH / f"{name}.py").read_text()
    return any(marker in text for marker in REFLEX_MARKERS)


def run_all(names: list[str], smoke: bool, scratch: Path, jobs: int) -> dict[str, Any]:
    """Every benchmark's result, in ``names`` order. With ``jobs > 1`` they run side by side
    (the Reflex ones in one lane of their own), each one's output printed whole when it ends."""
    if jobs <= 1:
        results: dict[str, Any] = {}
        for name in names:
            print(f"\n=== {name} ===", flush=True)
            results[name] = run_one(name, smoke, scratch)
        return results
    printing = threading.Lock()

    def lane(group: queue.SimpleQueue[str]) -> dict[str, Any]:
        done: dict[str, Any] = {}
        while True:
            try:
                name = group.get_nowait()
            except queue.Empty:
                return done
            output: list[str] = []
            done[name] = run_one(name, smoke, scratch, output=output)
            with printing:
                print(f"\n=== {name} ===\n{''.join(output)}", end="", flush=True)

    def queued(group: list[str]) -> queue.SimpleQueue[str]:
        q: queue.SimpleQueue[str] = queue.SimpleQueue()
        for name in group:
            q.put(name)
        return q

    reflex = [n for n in names if starts_reflex(n)]
    # The others share one queue (a free lane takes the next), the slow ones first, so that
    # no lane is left with a long one at the end while the rest are idle.
    others = sorted((n for n in names if n not in reflex), key=lambda n: n not in SLOW_FIRST)
    shared = queued(others)
    lanes = ([queued(reflex)] if reflex else []) + [shared] * (jobs - 1 if reflex else jobs)
    finished: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done in pool.map(lane, lanes):
            finished.update(done)
    return {name: finished[name] for name in names}


def run_one(
    name: str, smoke: bool, scratch: Path, output: list[str] | None = None
) -> dict[str, Any]:
    """Run ``bench.<name>`` in its own process; its result, or ``{"error": ...}``. With
    ``output``, the process's stdout and stderr are collected there instead of passed on."""
    out = scratch / f"{name}.json"
    cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
    if smoke:
        cmd.append("--smoke")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    try:
        capture = output is not None
        proc = subprocess.run(
            cmd, cwd=REPO, env=env, timeout=SMOKE_TIMEOUT if smoke else None, text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        if output is not None and exc.output:
            output.append(exc.output if isinstance(exc.output, str) else exc.output.decode())
        return {"error": f"timed out after {SMOKE_TIMEOUT:g} s"}
    if output is not None:
        output.append(proc.stdout or "")
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
    parser.add_argument(
        "--jobs", type=int, help=f"benchmarks at once (default: {SMOKE_JOBS} at smoke size, else 1)"
    )
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
    jobs = args.jobs or (SMOKE_JOBS if args.smoke else 1)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        if args.smoke:  # one PostgreSQL for every benchmark: an initdb each costs seconds
            os.environ[SHARED_POSTGRES_ENV] = stack.enter_context(temp_postgres(durable=True)).url()
            stack.callback(os.environ.pop, SHARED_POSTGRES_ENV, None)
        record["benchmarks"] = run_all(names, args.smoke, Path(tmp), jobs)
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    record["load_average_after"] = load_average()
    folder = args.out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    failed = {n: r["error"] for n, r in record["benchmarks"].items() if "error" in r}
    print("\n=== summary ===")
    for name, result in record["benchmarks"].items():  # seconds: where a run's time goes
        outcome = result.get("error") or result["verdict"]
        print(f"{name} ({result.get('seconds', '?')} s): {outcome}")
    print(f"wrote {path}")
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
