"""Benchmark: the local server's one-event ingest vs a bare endpoint on the same HTTP stack.

    python -m bench.http_ceiling [--smoke]

Two processes serve ``POST /v1/usage/track`` with uvicorn, side by side, on the same stack
(``bench._stack``): the local billing server (SQLite on a temporary file, rate limit off, no
access log), and the ceiling, a bare Starlette route that reads and parses the same JSON body
and answers with the same bytes the server answered (recorded at the start). Both are driven
in alternating rounds by the same driver, ``bench._driver``: its own process, raw keep-alive
HTTP/1.1 on 8 connections with one request in flight each, every request encoded before the
clock starts with a distinct idempotency key. On a machine with two CPUs or more, both
serving processes are pinned to one CPU and the driver to another. Each HTTP stack is
measured: uvicorn's pure-Python ``h11`` parser on asyncio, and ``httptools`` on ``uvloop``
(``uvicorn[standard]``; what uvicorn picks when they are installed).

Figures per stack: requests/s for each side and their ratio server/bare (the headline: how
close the server gets to what the HTTP stack allows; goal >= 0.75); the CPU the serving
process spent per request (read from /proc) and its ratio bare/server; and the driver's own
CPU per request, with its ratio to the bare endpoint's, its wake-ups per request and the
share of its CPU's time in interrupts (against the bare endpoint: why the driver's CPU
moves, :func:`cpu_ticks`). The throughput ratio only reflects
the server when the driver is not what bounds it, so the verdict also requires the driver to
cost at most half the bare endpoint's CPU per request: on a CPU of its own it can then feed
twice the rate the bare endpoint can serve (an httpx client in threads cost about as much as
the bare endpoint, and made the ratio 1.08-1.20 whatever the server did). Plus what JSON
encoding costs in-process: parsing a track body with ``json`` vs ``orjson``, and encoding the
answer with pydantic vs ``orjson``. And the floor under the headline: the durable write's CPU
per event alone, in-process (:func:`write_costs`, the group commit's own call on a lone track
and on a group of as many tracks as the driver has connections), and per stack
``bare / (bare + write)``, the best CPU ratio a server that writes each track before
answering could reach if everything else it does (credential, validation, idempotency,
group-commit handoff, its answer's headers, metrics) cost nothing. The same write inside
the serving process, under the driver's load, is read from the server's own counters
(``billing_server_group_commit_*`` at ``/metrics``, around each timed round): its CPU per
request, the mean group size, and what is left of the server's CPU per request once the
bare endpoint's and that write's are taken away (``*_server_rest_cpu_us_per_request``: the
credential, the body's checks, the middleware, the group-commit handoff, the answer). The
write costs more there than alone (the rest of each request's work leaves the CPU's caches
cold for SQLite), so ``bare / (bare + write in the server)`` is the floor that applies.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import httpx
import orjson

from bench import _driver
from bench._driver import CUSTOMER, track_body
from bench._harness import REPO, cli, result
from bench.server_process import Served, uvicorn_process
from billing_ui.core import _constants as C
from billing_ui.core.models import TrackUsageResult
from billing_ui.server.clock import SystemClock
from billing_ui.server.observability import GROUP_COMMIT_METRICS
from billing_ui.server.plans import load_plans
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.sqlite_store import SqliteStore

HEADERS = {"Authorization": f"Bearer {C.LOCAL_SECRET_KEY}", "content-type": "application/json"}
STACKS = {"h11_asyncio": ("h11", "asyncio"), "httptools_uvloop": ("httptools", "uvloop")}
GOAL = 0.75
DRIVER_SHARE = 0.5
CONNECTIONS = 8
SYNCHRONOUS = "NORMAL"


class Run(NamedTuple):
    """One side's round: requests/s, CPU microseconds per request of the serving process and
    of the driver, the driver's wake-ups per request, and the share of its CPU's time spent
    in interrupts and softirqs (see :func:`cpu_ticks`)."""

    rps: float
    server_cpu_us: float
    driver_cpu_us: float
    driver_selects: float
    driver_cpu_irq_share: float


def cpu_ticks(cpu: int | None) -> tuple[int, int]:
    """(irq + softirq ticks, all ticks) of ``cpu`` (all CPUs when ``None``) from /proc/stat.

    Why: this kernel is built without ``CONFIG_IRQ_TIME_ACCOUNTING`` (see /proc/config.gz),
    so the softirq work done while a task runs (loopback TCP: delivering the packets it sends,
    ACKs, timers) is charged to that task's CPU time. The driver's CPU per request then moves
    with the network stack's work on its CPU, not only with its own code; this share, next to
    its wake-ups per request, tells the two apart when its figure jumps (an h11 round of the
    quiet run 20261130T160857Z had 416 µs, ten times the usual 35-45 µs, unexplained then)."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields and fields[0] == name:
            ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
            return ticks[5] + ticks[6], sum(ticks)
    return 0, 0


class Pinning(NamedTuple):
    """Which CPU the serving processes and the driver run on (``None``: wherever)."""

    server: int | None
    driver: int | None


def pinning() -> Pinning:
    """The servers on one CPU and the driver on another, when there are two: the driver's
    work then never takes the server's CPU (and the bare endpoint gets the same one)."""
    cpus = sorted(os.sched_getaffinity(0))
    return Pinning(cpus[0], cpus[1]) if len(cpus) >= 2 else Pinning(None, None)


def body(n: int, tag: str) -> bytes:
    return track_body(n, tag)


@contextmanager
def serve(side: str, stack: tuple[str, str], tmp: Path) -> Iterator[Served]:
    http, loop = stack
    env = {}
    if side == "server":
        # The HTTP path's own cost: the bare side writes nothing, so the server does not fsync
        # either (synchronous=NORMAL). What FULL costs is bench/ingest_durability.py's figure.
        env["BILLING_UI_SQLITE_SYNCHRONOUS"] = SYNCHRONOUS
        extra = ["--port", "0", "--db", str(tmp / f"{http}.db"), "--no-seed",
                 "--rate-limit-per-minute", "0", "--no-access-log"]  # fmt: skip
    else:
        extra = ["--answer", str(tmp / "answer.json")]
    args = ("-m", "bench._stack", side, "--http", http, "--loop", loop, *extra)
    with uvicorn_process(*args, env=env) as s:
        yield s


def pin(pid: int, cpu: int | None) -> None:
    """Pin every thread of process ``pid`` (threads it starts later inherit it)."""
    if cpu is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), {cpu})


class GroupTotals(NamedTuple):
    """The server's group-commit counters (``/metrics``): transactions, events, CPU s."""

    groups: float
    events: float
    cpu_s: float

    def minus(self, before: GroupTotals) -> GroupTotals:
        return GroupTotals(*(a - b for a, b in zip(self, before, strict=True)))


def group_totals(served: Served) -> GroupTotals:
    """Read outside the timed rounds (one GET of ``/metrics``)."""
    text = httpx.get(f"{served.url}/metrics").raise_for_status().text
    values = dict(line.split(" ", 1) for line in text.splitlines() if line[:1] not in ("#", ""))
    names = [f"{name}_total" for name, _, _ in GROUP_COMMIT_METRICS]
    return GroupTotals(*(float(values[n]) for n in names))


def drive(served: Served, requests: int, tag: str, connections: int, cpu: int | None) -> Run:
    """One run of the raw-socket driver (its own process) against ``served``."""
    port = str(urlsplit(served.url).port)
    command = [sys.executable, "-m", "bench._driver", "--port", port, "--requests",
               str(requests), "--connections", str(connections), "--tag", tag]  # fmt: skip
    if cpu is not None:
        command += ["--cpu", str(cpu)]
    env = {**os.environ, "PYTHONPATH": str(REPO), _driver.AUTH_ENV: HEADERS["Authorization"]}
    cpu0 = served.cpu_seconds()
    irq0, all0 = cpu_ticks(cpu)
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    server_cpu = served.cpu_seconds() - cpu0  # the driver's start-up included: the server idles
    irq1, all1 = cpu_ticks(cpu)
    if out.returncode != 0:
        raise RuntimeError(f"driver failed: {out.stderr.strip()[-2000:]}")
    report = json.loads(out.stdout)
    return Run(requests / report["wall_s"], server_cpu / requests * 1e6,
               report["cpu_s"] / requests * 1e6, report["selects"] / requests,
               (irq1 - irq0) / (all1 - all0) if all1 > all0 else 0.0)  # fmt: skip


def record_answer(server: Served, path: Path) -> None:
    """The server's answer to one track: what the bare endpoint sends back."""
    with httpx.Client(base_url=server.url, headers=HEADERS) as client:
        response = client.post("/v1/usage/track", content=body(0, "answer"))
        response.raise_for_status()
    path.write_bytes(response.content)


def ratio(a: float, b: float) -> float:
    """``a / b`` to 3 decimals; 0 when ``b`` is (a smoke run's CPU can be under a clock tick)."""
    return round(a / b, 3) if b else 0.0


def stack_figures(
    name: str, tmp: Path, rounds: int, requests: int, connections: int, cpus: Pinning
) -> dict[str, float]:
    stack = STACKS[name]
    samples: dict[str, list[Run]] = {"server": [], "bare": []}
    writes: list[GroupTotals] = []  # per server round: what its group commits did
    with serve("server", stack, tmp) as server_process:
        httpx.put(
            f"{server_process.url}/v1/customers/{CUSTOMER}", json={"products": ["enterprise"]},
            headers=HEADERS,
        ).raise_for_status()  # fmt: skip
        if not (tmp / "answer.json").exists():
            record_answer(server_process, tmp / "answer.json")
        with serve("bare", stack, tmp) as bare_process:
            sides = {"server": server_process, "bare": bare_process}
            for side, s in sides.items():
                pin(s.pid, cpus.server)
                drive(s, min(requests, 200), f"warm-{name}-{side}", connections, cpus.driver)
            for r in range(rounds):
                for side in ("server", "bare") if r % 2 == 0 else ("bare", "server"):
                    before = group_totals(server_process) if side == "server" else None
                    samples[side].append(
                        drive(sides[side], requests, f"{name}-{r}", connections, cpus.driver)
                    )
                    if before is not None:
                        after = group_totals(server_process)
                        writes.append(after.minus(before))
    med = {
        side: Run(*(statistics.median(getattr(v, f) for v in values) for f in Run._fields))
        for side, values in samples.items()
    }
    ratios = [s.rps / b.rps for s, b in zip(samples["server"], samples["bare"], strict=True)]
    server, bare = med["server"], med["bare"]
    write_us = statistics.median(w.cpu_s / requests * 1e6 for w in writes)
    return {
        f"{name}_server_over_bare": round(statistics.median(ratios), 3),
        f"{name}_server_req_per_s": round(server.rps),
        f"{name}_bare_req_per_s": round(bare.rps),
        f"{name}_server_cpu_us_per_request": round(server.server_cpu_us),
        f"{name}_bare_cpu_us_per_request": round(bare.server_cpu_us),
        f"{name}_bare_over_server_cpu": ratio(bare.server_cpu_us, server.server_cpu_us),
        f"{name}_driver_cpu_us_per_request": round(
            statistics.median([*(r.driver_cpu_us for v in samples.values() for r in v)]), 1
        ),
        f"{name}_driver_over_bare_cpu": ratio(
            statistics.median(r.driver_cpu_us for r in samples["bare"]), bare.server_cpu_us
        ),
        f"{name}_server_mean_group": round(
            statistics.median(w.events / w.groups for w in writes if w.groups), 2
        ),
        f"{name}_server_write_cpu_us_per_request": round(write_us, 1),
        f"{name}_server_rest_cpu_us_per_request": round(
            server.server_cpu_us - bare.server_cpu_us - write_us, 1
        ),
        f"{name}_bare_over_bare_plus_served_write_cpu": ratio(
            bare.server_cpu_us, bare.server_cpu_us + write_us
        ),
        f"{name}_driver_selects_per_request": round(bare.driver_selects, 3),
        f"{name}_driver_cpu_irq_share": round(bare.driver_cpu_irq_share, 3),
    }


def json_costs(tmp: Path) -> dict[str, float]:
    """Microseconds per call of parsing a track body and encoding a track answer."""
    raw = body(1, "json")
    answer = TrackUsageResult.model_validate_json((tmp / "answer.json").read_bytes())
    as_dict = answer.model_dump(mode="json", by_alias=True)

    def best(fn: object) -> float:
        return min(timeit.repeat(fn, number=2000, repeat=5)) / 2000 * 1e6  # type: ignore[arg-type]

    return {
        "parse_json_us": round(best(lambda: json.loads(raw)), 2),
        "parse_orjson_us": round(best(lambda: orjson.loads(raw)), 2),
        "encode_pydantic_us": round(best(lambda: answer.model_dump_json(by_alias=True)), 2),
        "encode_orjson_us": round(
            best(lambda: orjson.dumps(answer.model_dump(mode="json", by_alias=True))), 2
        ),
        "encode_orjson_prebuilt_dict_us": round(best(lambda: orjson.dumps(as_dict)), 2),
    }


WRITE_GROUPS = (1, CONNECTIONS)
"""Group sizes the write is timed at: a lone track, and the largest group the driver's
connections can form (one request in flight on each)."""


def write_costs(tmp: Path, events: int) -> dict[str, float]:
    """CPU microseconds per event of the durable write alone, in this process: the group
    commit's own call (:meth:`BillingService.record_group_now`: the customer's lookup, the
    idempotency claims, the hard-limit decision, the rows, ``COMMIT``, each answer encoded)
    on a SQLite file with the server's settings, for groups of each of :data:`WRITE_GROUPS`.

    Why: it bounds the ceiling ratio. A server that writes each acknowledged track before
    answering costs at least the bare endpoint plus this, so ``bare / (bare + write)`` is
    the best CPU ratio it could reach if nothing else it does cost anything."""
    store = SqliteStore(tmp / "write.db", synchronous=SYNCHRONOUS)
    try:
        service = BillingService(store, load_plans(), SystemClock())
        service.upsert_customer(CUSTOMER, ["enterprise"], None)
        figures: dict[str, float] = {}
        serial = 0
        for size in WRITE_GROUPS:
            groups = []
            for _ in range(max(1, events // size)):
                keys = (f"w{serial + i}" for i in range(size))
                groups.append([TrackCommand(CUSTOMER, "api_calls", 1.0, k) for k in keys])
                serial += size
            started = time.process_time()
            for group in groups:
                if service.record_group_now(group) is None:
                    raise RuntimeError("the write lock was taken: nothing else writes here")
            spent = time.process_time() - started
            per_event = spent / (len(groups) * size) * 1e6
            figures[f"write_us_per_event_group_{size}"] = round(per_event, 1)
        return figures
    finally:
        store.close()


def run(*, smoke: bool = False) -> dict[str, object]:
    rounds, requests, connections = (1, 60, 2) if smoke else (5, 4000, CONNECTIONS)
    cpus = pinning()
    config = {
        "rounds": rounds,
        "requests_per_side_round": requests,
        "driver": f"raw-socket keep-alive HTTP/1.1, {connections} connections, own process",
        "pinning": f"server CPU {cpus.server}, driver CPU {cpus.driver}"
        if cpus.server is not None
        else "none",
        "stacks": ", ".join(f"{h}+{lp}" for h, lp in STACKS.values()),
        "server_sqlite_synchronous": SYNCHRONOUS,
    }
    print(f"http_ceiling: {config}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in STACKS:
            figures |= stack_figures(name, Path(tmp), rounds, requests, connections, cpus)
        figures |= json_costs(Path(tmp))
        figures |= write_costs(Path(tmp), 80 if smoke else 4000)
    write = figures[f"write_us_per_event_group_{CONNECTIONS}"]
    for name in STACKS:
        bare_cpu = figures[f"{name}_bare_cpu_us_per_request"]
        figures[f"{name}_bare_over_bare_plus_write_cpu"] = ratio(bare_cpu, bare_cpu + write)
    goals: dict[str, str] = {}
    checks: dict[str, bool] = {}
    for name in STACKS:
        # Throughput only says something about the server when the driver is not what
        # bounds it: the driver must cost at most DRIVER_SHARE of the bare endpoint's CPU
        # per request (on its own CPU it can then feed 1 / DRIVER_SHARE times the bare rate).
        goals[f"{name}_driver_over_bare_cpu"] = f"<= {DRIVER_SHARE} (server-bound)"
        checks[f"{name}_driver_over_bare_cpu"] = (
            figures[f"{name}_driver_over_bare_cpu"] <= DRIVER_SHARE
        )
        goals[f"{name}_server_over_bare"] = f">= {GOAL}"
        checks[f"{name}_server_over_bare"] = figures[f"{name}_server_over_bare"] >= GOAL
    return result("http_ceiling", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
