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
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
SMOKE_GOAL_S = 60.0
"""Seconds the whole smoke run should take on an idle 2-CPU machine (issue 13): reported by
the summary's last line, not asserted (tests/benchmarks' deadline is for a busy machine)."""
SMOKE_JOBS = (os.cpu_count() or 1) + 2
"""Benchmarks run at once at smoke size: two more than the CPUs, since much of a smoke
benchmark is waiting (for a process to listen, a socket, an interval) that another can fill
with work. Their timings are not looked at. A full run is one at a time: figures need the
machine."""
SLOW_FIRST = (
    "click_to_meter", "server_ingest", "many_sockets", "db_ceiling", "peers", "http_ceiling",
    "crash_ingest", "live_meters_workers", "state_manager_cost", "socket_flood",
)  # fmt: skip
"""The slowest benchmarks at smoke size, slowest first (wall and CPU seconds of a smoke run at
load 12 on 2 CPUs, 2026-11-30): queued first, since a free lane takes the next, so that no lane
is left with a long one at the end while the others are idle."""
EXCLUSIVE_MARKERS = ("running_demo",)
"""Source text of a benchmark that builds the demo's frontend in the repo (AppHarness compiles
into ``.web/``): those run one at a time even at smoke size. Backend-only Reflex benchmarks
(``bench/_reflex_backend.py``) compile nothing and each has its own states folder, so they
run beside anything."""


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


def exclusive(name: str) -> bool:
    text = (BENCH / f"{name}.py").read_text()
    return any(marker in text for marker in EXCLUSIVE_MARKERS)


def uses_postgres(name: str) -> bool:
    """Whether ``bench.<name>`` speaks of PostgreSQL (its stores, its docstring): it is given
    the smoke run's shared cluster. One that does not mention it but uses it anyway still
    works: it starts a cluster of its own (``bench.server_process.databases``)."""
    return "postgres" in (BENCH / f"{name}.py").read_text().lower()


def run_all(
    names: list[str],
    smoke: bool,
    scratch: Path,
    jobs: int,
    env_for: Callable[[str], dict[str, str]] = lambda name: {},
) -> dict[str, Any]:
    """Every benchmark's result, in ``names`` order. With ``jobs > 1`` they run side by side,
    the slowest first, each one's output printed whole when it ends. ``env_for(name)``: the
    variables to add to that benchmark's environment (it may wait for a shared service)."""
    if jobs <= 1:
        results: dict[str, Any] = {}
        for name in names:
            print(f"\n=== {name} ===", flush=True)
            results[name] = run_one(name, smoke, scratch, env=env_for(name))
        return results
    printing, building = threading.Lock(), threading.Lock()
    waiting: queue.SimpleQueue[str] = queue.SimpleQueue()
    for name in sorted(names, key=lambda n: SLOW_FIRST.index(n) if n in SLOW_FIRST else 99):
        waiting.put(name)

    def lane() -> dict[str, Any]:
        done: dict[str, Any] = {}
        while True:
            try:
                name = waiting.get_nowait()
            except queue.Empty:
                return done
            output: list[str] = []
            env = env_for(name)
            with building if exclusive(name) else contextlib.nullcontext():
                done[name] = run_one(name, smoke, scratch, output=output, env=env)
            with printing:
                print(f"\n=== {name} ===\n{''.join(output)}", end="", flush=True)

    finished: dict[str, Any] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for done in [pool.submit(lane) for _ in range(jobs)]:
            finished.update(done.result())
    return {name: finished[name] for name in names}


def run_one(
    name: str,
    smoke: bool,
    scratch: Path,
    output: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``bench.<name>`` in its own process (``env`` added to this one's); its result, or
    ``{"error": ...}``. With ``output``, the process's stdout and stderr are collected there
    instead of passed on."""
    out = scratch / f"{name}.json"
    cmd = [sys.executable, "-m", f"bench.{name}", "--json", str(out)]
    if smoke:
        cmd.append("--smoke")
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    timeout = SMOKE_TIMEOUT if smoke else None
    start = time.perf_counter()
    capture = output is not None
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, text=True, start_new_session=True,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.STDOUT if capture else None,
    )  # fmt: skip
    status, cpu, timed_out = _wait(proc, timeout, output)
    seconds = round(time.perf_counter() - start, 1)
    spent = {"seconds": seconds, "cpu_seconds": round(cpu, 1)}
    if timed_out:
        return {"error": f"timed out after {timeout:g} s", **spent}
    if status != 0 or not out.exists():
        return {"error": f"exit status {status}", **spent}
    try:
        result = check_result(json.loads(out.read_text()))
    except (ValueError, BadResult) as exc:
        return {"error": f"bad result: {exc}", **spent}
    return {**result, **spent}


def _wait(
    proc: subprocess.Popen[str], timeout: float | None, output: list[str] | None
) -> tuple[int, float, bool]:
    """Wait for ``proc``: its exit status, the CPU seconds (user + system) it and the children
    it waited for used, and whether it was killed (its whole process group) for outliving
    ``timeout``. CPU time beside wall time: on a shared machine wall time says how busy the
    machine was, CPU time what the benchmark costs."""
    reader = None
    if output is not None and proc.stdout is not None:
        stream = proc.stdout
        reader = threading.Thread(target=lambda: output.append(stream.read()), daemon=True)
        reader.start()
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(timeout, kill) if timeout is not None else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    try:
        _, wait_status, usage = os.wait4(proc.pid, 0)
    finally:
        if timer is not None:
            timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(wait_status)  # reaped here, not by Popen
    if reader is not None:
        reader.join(timeout=10)
    return proc.returncode, usage.ru_utime + usage.ru_stime, expired.is_set()


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
    clock = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="bench-") as tmp,
        contextlib.ExitStack() as stack,
        ThreadPoolExecutor(max_workers=1) as starter,  # joined before the stack stops the cluster
    ):
        # At smoke size one PostgreSQL for every benchmark (an initdb each costs seconds),
        # started beside the first benchmarks: only those that use it wait for it.
        shared = (
            starter.submit(lambda: stack.enter_context(temp_postgres(durable=True)).url())
            if args.smoke
            else None
        )

        def env_for(name: str) -> dict[str, str]:
            if shared is None or not uses_postgres(name):
                return {}
            return {SHARED_POSTGRES_ENV: shared.result()}

        record["benchmarks"] = run_all(names, args.smoke, Path(tmp), jobs, env_for)
        if shared is not None:
            shared.result()  # started (or failed) before the stack stops it
    record["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    record["load_average_after"] = load_average()
    record["seconds"] = round(time.perf_counter() - clock, 1)
    record["cpu_seconds"] = round(_cpu_seconds_so_far(), 1)
    folder = args.out or RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{started.strftime('%Y%m%dT%H%M%SZ')}{'-smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    failed = {n: r["error"] for n, r in record["benchmarks"].items() if "error" in r}
    print("\n=== summary ===")
    for name, result in record["benchmarks"].items():  # seconds: where a run's time goes
        outcome = result.get("error") or result["verdict"]
        spent = f"{result.get('seconds', '?')} s, CPU {result.get('cpu_seconds', '?')} s"
        print(f"{name} ({spent}): {outcome}")
    print(f"wrote {path}")
    print(total_line(record, args.smoke, whole=set(names) == set(found)))
    if failed:
        print(f"FAILED: {failed}", file=sys.stderr)
    elif args.smoke:  # a smoke run checks that each one runs and reports every figure
        print(
            f"smoke: PASS, {len(record['benchmarks'])} benchmarks ran and returned well-formed "
            "results (their goals are judged at full size only: `make bench`)"
        )
    return 1 if failed else 0


def _cpu_seconds_so_far() -> float:
    """CPU seconds (user + system) of this process and every child it has waited for: the
    benchmarks and the shared services."""
    spent = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        spent += usage.ru_utime + usage.ru_stime
    return spent


def total_line(record: dict[str, Any], smoke: bool, whole: bool = True) -> str:
    """The run's total wall and CPU time with the load average around it; at smoke size, a
    verdict against the goal (``SMOKE_GOAL_S`` on an idle 2-CPU machine) when every benchmark
    ran (``whole``). Under load the wall time overstates: CPU seconds / CPUs is the floor an
    idle machine cannot beat, and a miss at load 1 or more says so."""
    seconds, cpu = record["seconds"], record["cpu_seconds"]
    cpus = record["machine"]["cpus"] or 1
    before, after = record["machine"]["load_average"], record["load_average_after"]
    load = f"load {before[0] if before else '?'} -> {after[0] if after else '?'}"
    line = f"total: {seconds} s wall, {cpu} s CPU ({cpu / cpus:.1f} s per CPU), {load}"
    if not smoke:
        return line
    if not whole:
        return f"{line}; some benchmarks only: no verdict against the smoke goal"
    if seconds < SMOKE_GOAL_S:
        met = "met"
    elif before and before[0] >= 1:
        met = f"not met at load {before[0]} (the goal is for an idle machine)"
    else:
        met = "MISSED"
    return f"{line}; smoke goal < {SMOKE_GOAL_S:g} s idle: {met}"


if __name__ == "__main__":
    raise SystemExit(main())
