"""Benchmark: batched ingest vs the same writes done directly on the database.

    python -m bench.db_ceiling [--smoke]

Three arms write the same kind of batches, 1,000 events each (100 customers on
``enterprise``, ``api_calls``, quantity 1, a distinct idempotency key per event), each on its
own fresh SQLite file (WAL, ``synchronous=NORMAL``, as the store opens it), in alternating
rounds:

- **http**: ``POST /v1/usage/track-batch`` to the local server in its own process over
  loopback (bodies encoded before the clock starts) - what an app gets;
- **service**: ``BillingService.track_batch`` in this process - the server's work without
  HTTP;
- **direct** (the ceiling): the store's own statements, with no HTTP, no validation, no limit
  checks, in one transaction: claim each idempotency key with its own statement (any writer
  must learn which keys were replays, so it cannot be one ``executemany``), then upsert the
  period aggregates and hourly buckets (pre-summed per customer) and insert the event rows,
  one ``executemany`` each.

Figures: events/s of each arm, and the ratios http/direct (goal >= 0.6) and service/direct.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench._harness import cli, result
from bench.server_process import server_process
from billing_ui.core import _constants as C
from billing_ui.server import usage_sql
from billing_ui.server.clock import SystemClock
from billing_ui.server.plans import load_plans
from billing_ui.server.service import BillingService, TrackCommand
from billing_ui.server.sqlite_store import SqliteStore

CUSTOMERS = [f"db_{i:03d}" for i in range(100)]
FEATURE = "api_calls"
BATCH = 1000
GOAL = 0.6

WriteBatch = Callable[[int, str], None]
"""Write batch number ``n`` of round ``tag``."""


def events(n: int, tag: str) -> list[tuple[str, str]]:
    """(customer, idempotency key) of the events of batch ``n``."""
    return [(CUSTOMERS[i % len(CUSTOMERS)], f"{tag}-{n}-{i}") for i in range(BATCH)]


def _micros(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def direct_writer(db: Path) -> tuple[WriteBatch, Callable[[], None]]:
    """The ceiling: the store's statements straight on a connection, one transaction a batch."""
    _, close = service_writer(db)  # the schema and the customers, as the server makes them
    close()
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    pks = dict(conn.execute("SELECT external_id, id FROM customers").fetchall())
    now = datetime.now(UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(
        month=start.month + 1
    )  # fmt: skip
    period = (_micros(start), _micros(end))
    hour = _micros(now.replace(minute=0, second=0, microsecond=0))
    q = 1_000_000  # quantity 1 in millionths

    def write(n: int, tag: str) -> None:
        now_us = _micros(datetime.now(UTC))
        batch = [(pks[cid], key) for cid, key in events(n, tag)]
        per_customer = Counter(pk for pk, _ in batch)
        conn.execute("BEGIN IMMEDIATE")
        claim = usage_sql.CLAIM_KEY
        for pk, key in batch:  # one statement per key: a writer must know which were replays
            if not conn.execute(claim, (pk, key, FEATURE, q, now_us, 0)).rowcount:
                raise RuntimeError(f"key {key} replayed")
        conn.executemany(
            usage_sql.ADD_TO_AGGREGATE,
            [(pk, FEATURE, *period, q * c, c, now_us) for pk, c in per_customer.items()],
        )
        conn.executemany(
            usage_sql.ADD_TO_HOUR,
            [(pk, FEATURE, hour, q * c, c) for pk, c in per_customer.items()],
        )
        conn.executemany(
            usage_sql.INSERT_EVENT, [(pk, FEATURE, q, now_us, key, None) for pk, key in batch]
        )
        conn.execute("COMMIT")

    return write, conn.close


def service_writer(db: Path) -> tuple[WriteBatch, Callable[[], None]]:
    store = SqliteStore(db)
    service = BillingService(store, load_plans(), SystemClock())
    for cid in CUSTOMERS:
        service.upsert_customer(cid, ["enterprise"], "active")

    def write(n: int, tag: str) -> None:
        cmds = [TrackCommand(cid, FEATURE, 1, key, None) for cid, key in events(n, tag)]
        service.track_batch(cmds, rate_limited=False)

    return write, store.close


def http_body(n: int, tag: str) -> bytes:
    return json.dumps(
        {
            "events": [
                {"customer_id": cid, "feature_key": FEATURE, "quantity": 1, "idempotency_key": k}
                for cid, k in events(n, tag)
            ]
        }
    ).encode()


def measure(write: WriteBatch, batches: int, tag: str) -> float:
    start = time.perf_counter()
    for n in range(batches):
        write(n, tag)
    return batches * BATCH / (time.perf_counter() - start)


def compare(tmp: Path, rounds: int, batches: int) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"http": [], "service": [], "direct": []}
    direct, close_direct = direct_writer(tmp / "direct.db")
    service, close_service = service_writer(tmp / "service.db")
    headers = {"Authorization": f"Bearer {C.LOCAL_SECRET_KEY}", "content-type": "application/json"}
    try:
        with (
            server_process(tmp / "http.db") as url,
            httpx.Client(base_url=url, headers=headers, timeout=60) as http,
        ):
            for cid in CUSTOMERS:
                http.put(f"/v1/customers/{cid}", json={"products": ["enterprise"]})
            bodies: dict[tuple[int, str], bytes] = {}

            def over_http(n: int, tag: str) -> None:
                http.post("/v1/usage/track-batch", content=bodies[(n, tag)]).raise_for_status()

            arms: dict[str, WriteBatch] = {"http": over_http, "service": service, "direct": direct}
            for r in range(-1, rounds):  # round -1 warms up
                tag = f"r{r}"
                bodies = {(n, tag): http_body(n, tag) for n in range(batches)}
                for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
                    rate = measure(arms[name], batches, f"{tag}-{name}" if name != "http" else tag)
                    if r >= 0:
                        rates[name].append(rate)
    finally:
        close_direct()
        close_service()
    return rates


def run(*, smoke: bool = False) -> dict[str, object]:
    rounds, batches = (1, 2) if smoke else (4, 20)
    config = {"rounds": rounds, "batches_per_arm_round": batches, "batch_size": BATCH}
    config["customers"] = len(CUSTOMERS)
    print(f"db_ceiling: {config}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rates = compare(Path(tmp), rounds, batches)
    figures: dict[str, float] = {
        f"{name}_events_per_s": round(statistics.median(v)) for name, v in rates.items()
    }
    for name in ("http", "service"):
        ratios = [a / d for a, d in zip(rates[name], rates["direct"], strict=True)]
        figures[f"{name}_over_direct"] = round(statistics.median(ratios), 3)
    goals = {"http_over_direct": f">= {GOAL} (batched ingest over HTTP / the database itself)"}
    checks = {"http_over_direct": figures["http_over_direct"] >= GOAL}
    return result("db_ceiling", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
