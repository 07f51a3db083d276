"""Fault case and benchmark: the local billing server killed with ``kill -9`` in the middle of
a batch ingest, then restarted on the same database.

    python -m bench.crash_ingest [--smoke]

A real ``python -m billing_ui.server`` process (SQLite in WAL mode with ``synchronous=FULL``,
or PostgreSQL in a throwaway cluster of Debian's ``postgresql``) receives ``events`` usage
events in batches of 1,000 (``POST /v1/usage/track-batch``) from two clients over loopback.
Every event has its own idempotency key ``crash-<batch>-<i>``. Once half of the batches are
acknowledged the server gets SIGKILL while the clients are still sending; it is then started
again on the same database, and the database itself (not the API) is checked:

- no batch half applied: each batch's events are either all there or none;
- every acknowledged batch is there;
- aggregates (``usage_aggregates``, ``usage_hourly``) equal the sums of the events, per
  customer and feature;
- every idempotency key has its event and every event its key.

Then every batch is sent again with the same keys (what a client that never saw its answer
does): the database must hold each of the ``events`` exactly once. The baseline for the
resend's speed is the first ingest's, before the kill (``*_resend_vs_ingest_speed_ratio``:
a resend of events already recorded costs about what recording them did).
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench._harness import cli, result
from bench.server_process import STORES, databases, uvicorn_process
from billing_ui.server.testing import query

KEY = "sk_test_billing_ui_local"
HEADERS = {"Authorization": f"Bearer {KEY}", "content-type": "application/json"}
CUSTOMERS = [f"crash_{i:02d}" for i in range(20)]
BATCH = 1000
CLIENTS = 2


def _server_args(database: str) -> list[str]:
    where = "--database-url" if database.startswith("postgres") else "--db"
    return [
        "-m", "billing_ui.server", "--port", "0", where, database, "--no-seed",
        "--rate-limit-per-minute", "0", "--no-access-log",
    ]  # fmt: skip


def _bodies(batches: int) -> list[bytes]:
    """Batch ``b``: 1,000 events over the customers, quantities 1-3, keys ``crash-b-i``."""
    return [
        json.dumps(
            {
                "events": [
                    {
                        "customer_id": CUSTOMERS[i % len(CUSTOMERS)],
                        "feature_key": "api_calls",
                        "quantity": 1 + i % 3,
                        "idempotency_key": f"crash-{b}-{i}",
                    }
                    for i in range(BATCH)
                ]
            }
        ).encode()
        for b in range(batches)
    ]


def _send(url: str, bodies: list[bytes], order: list[int], acked: set[int]) -> int:
    """POST the batches ``order`` from a client of its own until one fails (the server was
    killed); each acknowledged batch (200, every item recorded) goes into ``acked``. Returns
    how many were still sent after the first failure: 0."""
    with httpx.Client(base_url=url, headers=HEADERS, timeout=120) as client:
        for b in order:
            try:
                response = client.post("/v1/usage/track-batch", content=bodies[b])
            except httpx.TransportError:
                return b  # the batch in flight when the server died
            if response.status_code != 200:
                raise RuntimeError(f"batch {b}: {response.status_code} {response.text[:200]}")
            acked.add(b)
    return -1


def _ingest(url: str, bodies: list[bytes], acked: set[int]) -> list[int]:
    """Every batch, split between ``CLIENTS`` clients; the batches in flight at a failure."""
    orders = [list(range(c, len(bodies), CLIENTS)) for c in range(CLIENTS)]
    with ThreadPoolExecutor(CLIENTS) as pool:
        cut = list(pool.map(lambda o: _send(url, bodies, o, acked), orders))
    return [b for b in cut if b >= 0]


def _create_customers(url: str) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as client:
        for cid in CUSTOMERS:
            client.put(f"/v1/customers/{cid}", json={"products": ["enterprise"]}).raise_for_status()


def audit(database: str, batches: int) -> tuple[dict[str, int], set[int]]:
    """What the database itself holds, checked against every invariant of a crash; and the
    batches that are fully there."""
    per_batch = Counter(
        int(key.split("-")[1])
        for (key,) in query(database, "SELECT idempotency_key FROM usage_events")
    )
    events_by = dict(_sums(database, "usage_events", "quantity_micros", "COUNT(*)"))
    aggs = dict(_sums(database, "usage_aggregates", "consumed_micros", "SUM(event_count)"))
    hours = dict(_sums(database, "usage_hourly", "quantity_micros", "SUM(event_count)"))
    # Matched in Python: usage_events has no index on its key, a NOT EXISTS would be O(n^2).
    event_keys = set(query(database, "SELECT customer_id, idempotency_key FROM usage_events"))
    claimed = set(query(database, "SELECT customer_id, idempotency_key FROM idempotency_keys"))
    keys_without_event, events_without_key = len(claimed - event_keys), len(event_keys - claimed)
    ((distinct_keys,),) = query(
        database, "SELECT COUNT(DISTINCT idempotency_key) FROM usage_events"
    )
    found = {
        "events": sum(per_batch.values()),
        "distinct_keys": int(distinct_keys),
        "batches_applied": sum(1 for n in per_batch.values() if n == BATCH),
        "batches_half_applied": sum(1 for b in range(batches) if 0 < per_batch[b] != BATCH),
        "aggregate_mismatches": sum(aggs.get(k) != v for k, v in events_by.items())
        + len(aggs.keys() - events_by.keys()),
        "hourly_mismatches": sum(hours.get(k) != v for k, v in events_by.items())
        + len(hours.keys() - events_by.keys()),
        "keys_without_event": int(keys_without_event),
        "events_without_key": int(events_without_key),
    }
    return found, {b for b, n in per_batch.items() if n == BATCH}


def _sums(database: str, table: str, micros: str, count: str) -> list[tuple[Any, Any]]:
    """(customer, feature) -> (sum of quantities, number of events) in ``table``."""
    rows = query(
        database,
        f"SELECT customer_id, feature_key, SUM({micros}), {count} FROM {table}"
        " GROUP BY customer_id, feature_key",
    )
    return [((int(c), f), (int(s), int(n))) for c, f, s, n in rows]


def crash_and_recover(database: str, events: int) -> dict[str, Any]:
    """Ingest ``events`` into a server on ``database``, SIGKILL it once half the batches are
    acknowledged, restart it, audit, resend everything, audit again. The raw findings."""
    batches = max(2, events // BATCH)
    bodies = _bodies(batches)
    acked: set[int] = set()
    with uvicorn_process(*_server_args(database)) as served:
        _create_customers(served.url)

        def kill_at_half() -> None:
            while len(acked) < batches // 2:
                time.sleep(0.001)
            os.kill(served.pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_at_half, daemon=True)
        killer.start()
        started = time.perf_counter()
        in_flight = _ingest(served.url, bodies, acked)
        ingest_until_kill_s = time.perf_counter() - started
        killer.join(10)
    started = time.perf_counter()
    with uvicorn_process(*_server_args(database)) as served:
        restart_s = time.perf_counter() - started
        after_crash, applied = audit(database, batches)
        started = time.perf_counter()
        again: set[int] = set()
        if _ingest(served.url, bodies, again):
            raise RuntimeError("the restarted server failed a batch")
        resend_s = time.perf_counter() - started
    final, _ = audit(database, batches)
    return {
        "batches": batches,
        "acked_before_kill": len(acked),
        "in_flight_at_kill": len(in_flight),
        "in_flight_applied": len(applied & set(in_flight)),
        "acked_missing": len(acked - applied),
        "after_crash": after_crash,
        "final": final,
        "ingest_until_kill_s": ingest_until_kill_s,
        "restart_s": restart_s,
        "resend_s": resend_s,
        "ingest_rate": len(acked) * BATCH / ingest_until_kill_s,
        "resend_rate": batches * BATCH / resend_s,
    }


def broken_invariants(found: dict[str, Any]) -> list[str]:
    """Every invariant of a crash and recovery that ``found`` breaks (empty: all hold)."""
    broken = []
    for stage in ("after_crash", "final"):
        for name in ("batches_half_applied", "aggregate_mismatches", "hourly_mismatches",
                     "keys_without_event", "events_without_key"):  # fmt: skip
            if found[stage][name]:
                broken.append(f"{stage}.{name} = {found[stage][name]}")
    if found["acked_missing"]:
        broken.append(f"{found['acked_missing']} acknowledged batches missing after the crash")
    total = found["batches"] * BATCH
    if (found["final"]["events"], found["final"]["distinct_keys"]) != (total, total):
        broken.append(f"final events/keys {found['final']['events']}/"
                      f"{found['final']['distinct_keys']}, expected {total}")  # fmt: skip
    return broken


def run(*, smoke: bool = False) -> dict[str, object]:
    events = 2_000 if smoke else 100_000
    stores = STORES  # both at smoke size too: every figure is reported (2,000 events each)
    config = {"events": events, "batch": BATCH, "clients": CLIENTS, "stores": list(stores),
              "kill": "SIGKILL once half the batches are acknowledged"}  # fmt: skip
    print(f"crash_ingest: {config}", flush=True)
    figures: dict[str, float] = {}
    broken: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in stores:
            with databases(kind, Path(tmp)) as new_database:
                found = crash_and_recover(new_database(), events)
            broken += [f"{kind}: {b}" for b in broken_invariants(found)]
            after = found["after_crash"]
            figures |= {
                f"{kind}_batches_half_applied": after["batches_half_applied"],
                f"{kind}_aggregate_mismatches": after["aggregate_mismatches"]
                + after["hourly_mismatches"],
                f"{kind}_keys_without_event": after["keys_without_event"],
                f"{kind}_acked_batches_lost": found["acked_missing"],
                f"{kind}_in_flight_batches_at_kill": found["in_flight_at_kill"],
                f"{kind}_in_flight_batches_applied": found["in_flight_applied"],
                f"{kind}_events_at_kill": after["events"],
                f"{kind}_final_events": found["final"]["events"],
                f"{kind}_final_duplicates": found["final"]["events"]
                - found["final"]["distinct_keys"],
                f"{kind}_restart_s": round(found["restart_s"], 2),
                f"{kind}_resend_all_s": round(found["resend_s"], 2),
                f"{kind}_ingest_events_per_s": round(found["ingest_rate"]),
                f"{kind}_resend_events_per_s": round(found["resend_rate"]),
                f"{kind}_resend_vs_ingest_speed_ratio": round(
                    found["resend_rate"] / found["ingest_rate"], 2
                ),
            }
    goals = {
        f"{kind}_{name}": "0" for kind in stores
        for name in ("batches_half_applied", "aggregate_mismatches", "keys_without_event",
                     "acked_batches_lost", "final_duplicates")
    }  # fmt: skip
    checks = {name: figures[name] == 0 for name in goals}
    out = result("crash_ingest", config, figures, goals, checks)
    if broken:
        out["verdict"] = "INVARIANT BROKEN - " + "; ".join(broken)
    return out


if __name__ == "__main__":
    cli(run)
