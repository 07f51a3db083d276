"""Benchmark: batched ingest vs the database's own ceiling, on SQLite and PostgreSQL, with one
and two server processes.

    python -m bench.db_ceiling [--smoke]

The one definition of "the database's ceiling" for batched ingest (issue 11: >= 0.5x; issue 13:
>= 0.6x). Every arm writes the same kind of batches, 1,000 events each (100 customers on
``enterprise``, ``api_calls``, quantity 1, a distinct idempotency key per event), on its own
fresh database of the store (SQLite: a file in WAL mode with the store's ``synchronous``,
``FULL`` unless ``BILLING_UI_SQLITE_SYNCHRONOUS`` says ``NORMAL``, on both sides; PostgreSQL:
a database of one throwaway cluster, fsync on, ``synchronous_commit`` off), in alternating
rounds:

- **http_1_proc**: ``POST /v1/usage/track-batch`` to one ``python -m billing_ui.server``
  process over loopback, one client (bodies encoded before the clock starts): what an app
  gets;
- **http_2_proc**: two server processes on one database, one client each, at once;
- **service**: ``BillingService.track_batch`` in this process: the server's work without HTTP
  and without reading the body (the commands are built before the clock starts);
- **ceiling**: the same rows written with the store's own statements through the store's own
  adapter (:func:`~billing_ui.server.usage_sql.claim_keys`, then
  :func:`~billing_ui.server.usage_sql.write_usage`: claim each idempotency key, upsert one
  period aggregate and one hourly bucket per customer with the batch's sums, insert the 1,000
  event rows), one transaction per batch, and nothing else: no HTTP, no JSON, no validation,
  no customer lock, no aggregate read, no limit check, every row computed before the clock
  starts. The server writes exactly these rows with exactly these statements; what it adds is
  the reading, deciding and answering around them, which is what the ratios measure.

Figures per store: events/s of each arm, and ``*_over_ceiling`` (median of the per-round
ratios). ``bench/server_ingest.py`` covers one event per request and the hard-limit count.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench._harness import cli, result
from bench.server_process import STORES, databases, server_process
from billing_ui.core import _constants as C
from billing_ui.server import usage_sql
from billing_ui.server.clock import SystemClock, to_micros
from billing_ui.server.periods import hour_floor, period_containing
from billing_ui.server.plans import load_plans
from billing_ui.server.service import IDEMPOTENCY_WINDOW, BillingService, TrackCommand
from billing_ui.server.store import open_store

CUSTOMERS = [f"db_{i:03d}" for i in range(100)]
FEATURE = "api_calls"
BATCH = 1000
GOAL = 0.6
INGEST_GOAL = 20_000
"""SQLite, one process: events/s (the first release's target)."""
HEADERS = {"Authorization": f"Bearer {C.LOCAL_SECRET_KEY}", "content-type": "application/json"}

WriteBatches = Callable[[list[int], str], float]
"""Write the batches numbered so, tagged ``tag`` (distinct keys per tag); the seconds taken,
counted once the inputs are prepared."""


def events(n: int, tag: str) -> list[tuple[str, str]]:
    """(customer, idempotency key) of the events of batch ``n`` (``tag`` ends with the
    batch size)."""
    size = int(tag.rsplit("-", 1)[1])
    return [(CUSTOMERS[i % len(CUSTOMERS)], f"{tag}-{n}-{i}") for i in range(size)]


def _open(database: str) -> Any:
    return open_store(database if database.startswith("postgres") else Path(database))


def _subscribe(database: str) -> dict[str, int]:
    """Create the customers as the server does; their primary keys."""
    store = _open(database)
    try:
        service = BillingService(store, load_plans(), SystemClock())
        return {cid: service.upsert_customer(cid, ["enterprise"], "active").pk for cid in CUSTOMERS}
    finally:
        store.close()


# --- the ceiling ------------------------------------------------------------------------
@contextmanager
def _transactions(database: str) -> Iterator[Callable[[], Any]]:
    """A maker of write transactions on a plain connection, each yielding the store's own
    :class:`~billing_ui.server.usage_sql.Tx` adapter (committed when the block ends)."""
    if database.startswith("postgres"):
        import psycopg

        from billing_ui.server.postgres_store import _PgTx

        with psycopg.connect(database, autocommit=True) as pg:

            @contextmanager
            def pg_tx() -> Iterator[_PgTx]:
                with pg.transaction():
                    yield _PgTx(pg)

            yield pg_tx
        return
    from billing_ui.server.sqlite_store import _SqliteTx, synchronous_mode

    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {synchronous_mode()}")  # as the store opens it
    conn.execute("PRAGMA foreign_keys = ON")

    @contextmanager
    def sqlite_tx() -> Iterator[_SqliteTx]:
        conn.execute("BEGIN IMMEDIATE")
        yield _SqliteTx(conn)
        conn.execute("COMMIT")

    try:
        yield sqlite_tx
    finally:
        conn.close()


@contextmanager
def ceiling_writer(database: str) -> Iterator[WriteBatches]:
    """The ceiling (see the module docstring): the rows of each batch prepared first, then
    written with the store's statements, one transaction per batch."""
    pks = _subscribe(database)
    q = 1_000_000  # quantity 1 in millionths

    def rows(n: int, tag: str) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        now = datetime.now(UTC)
        now_us, cutoff_us = to_micros(now), to_micros(now - IDEMPOTENCY_WINDOW)
        period = period_containing("month", now)
        start, end, hour = (
            to_micros(period.start),
            to_micros(period.end),
            to_micros(hour_floor(now)),
        )
        batch = [(pks[cid], key) for cid, key in events(n, tag)]
        counts = Counter(pk for pk, _ in batch)
        return (
            [(pk, key, FEATURE, q, now_us, cutoff_us) for pk, key in batch],
            [(pk, FEATURE, start, end, q * c, c, now_us) for pk, c in counts.items()],
            [(pk, FEATURE, hour, q * c, c) for pk, c in counts.items()],
            [(pk, FEATURE, q, now_us, key, None) for pk, key in batch],
        )

    with _transactions(database) as transaction:

        def write(numbers: list[int], tag: str) -> float:
            prepared = [rows(n, tag) for n in numbers]
            start = time.perf_counter()
            for keys, aggregates, hours, rows_ in prepared:
                with transaction() as tx:
                    if not all(usage_sql.claim_keys(tx, keys)):
                        raise RuntimeError("a key of the ceiling was a replay")
                    usage_sql.write_usage(tx, aggregates, hours, rows_)
            return time.perf_counter() - start

        yield write


# --- the server's arms ------------------------------------------------------------------
@contextmanager
def service_writer(database: str) -> Iterator[WriteBatches]:
    _subscribe(database)
    store = _open(database)
    service = BillingService(store, load_plans(), SystemClock())
    try:

        def write(numbers: list[int], tag: str) -> float:
            batches = [
                [TrackCommand(cid, FEATURE, 1, key, None) for cid, key in events(n, tag)]
                for n in numbers
            ]  # built before the clock starts, as the other arms' bodies and rows are
            start = time.perf_counter()
            for cmds in batches:
                service.track_batch(cmds, rate_limited=False)
            return time.perf_counter() - start

        yield write
    finally:
        store.close()


def http_body(n: int, tag: str) -> bytes:
    return json.dumps(
        {
            "events": [
                {"customer_id": cid, "feature_key": FEATURE, "quantity": 1, "idempotency_key": k}
                for cid, k in events(n, tag)
            ]
        }
    ).encode()


@contextmanager
def http_writers(one: str, two: str) -> Iterator[dict[str, WriteBatches]]:
    """``http_1_proc``: one server process on database ``one``; ``http_2_proc``: two server
    processes on database ``two`` (each arm on its own database, as every arm is: an arm
    sharing its file with another would write into twice as many rows as the ceiling)."""
    with ExitStack() as stack:
        urls = []
        for database, procs in ((one, 1), (two, 2)):
            _subscribe(database)
            urls += [stack.enter_context(server_process(database)) for _ in range(procs)]
        clients = [
            stack.enter_context(httpx.Client(base_url=u, headers=HEADERS, timeout=120))
            for u in urls
        ]

        def post_all(client: httpx.Client, bodies: list[bytes]) -> None:
            for body in bodies:
                client.post("/v1/usage/track-batch", content=body).raise_for_status()

        def writer(to: list[httpx.Client]) -> WriteBatches:
            procs = len(to)

            def write(numbers: list[int], tag: str) -> float:
                bodies = [http_body(n, tag) for n in numbers]
                parts = [bodies[p::procs] for p in range(procs)]
                with ThreadPoolExecutor(procs) as pool:
                    start = time.perf_counter()
                    list(pool.map(post_all, to, parts))
                    return time.perf_counter() - start

            return write

        yield {"http_1_proc": writer(clients[:1]), "http_2_proc": writer(clients[1:])}


def measure(write: WriteBatches, batches: int, size: int, tag: str) -> float:
    """Events per second of ``write`` over ``batches`` batches of ``size`` events."""
    return batches * size / write(list(range(batches)), f"{tag}-{size}")


def compare(
    kind: str, folder: Path, rounds: int, batches: int, size: int
) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {}
    with databases(kind, folder) as new_database, ExitStack() as stack:
        arms = dict(stack.enter_context(http_writers(new_database(), new_database())))
        arms["service"] = stack.enter_context(service_writer(new_database()))
        arms["ceiling"] = stack.enter_context(ceiling_writer(new_database()))
        rates = {name: [] for name in arms}
        for r in range(-1, rounds):  # round -1 warms up
            for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                rate = measure(arms[name], batches if r >= 0 else 1, size, f"r{r}{name}")
                if r >= 0:
                    rates[name].append(rate)
    return rates


def figures_of(kind: str, rates: dict[str, list[float]]) -> dict[str, float]:
    figures: dict[str, float] = {
        f"{kind}_{name}_events_per_s": round(statistics.median(v)) for name, v in rates.items()
    }
    for name in ("http_1_proc", "http_2_proc", "service"):
        ratios = [a / c for a, c in zip(rates[name], rates["ceiling"], strict=True)]
        figures[f"{kind}_{name}_over_ceiling"] = round(statistics.median(ratios), 3)
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    rounds, batches, size = (1, 1, 100) if smoke else (7, 12, BATCH)
    config = {
        "rounds": rounds,
        "batches_per_arm_round": batches,
        "batch_size": size,
        "customers": len(CUSTOMERS),
        "stores": ", ".join(STORES),
    }
    print(f"db_ceiling: {config}", flush=True)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in STORES:
            figures |= figures_of(kind, compare(kind, Path(tmp), rounds, batches, size))
    goals = {"sqlite_http_1_proc_events_per_s": f">= {INGEST_GOAL:,} events/s"}
    checks = {
        "sqlite_http_1_proc_events_per_s": figures["sqlite_http_1_proc_events_per_s"] >= INGEST_GOAL
    }
    for kind in STORES:
        for procs in (1, 2):
            name = f"{kind}_http_{procs}_proc_over_ceiling"
            goals[name] = f">= {GOAL} (batched ingest over HTTP / the database's own ceiling)"
            checks[name] = figures[name] >= GOAL
    return result("db_ceiling", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
