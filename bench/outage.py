"""Fault case and benchmark: the billing API down while an app makes 1,000 tracks, then back.

    python -m bench.outage [--smoke]

The real local billing server runs as its own process (SQLite, loopback); the app is a
:class:`UsageTracker` (durable SQLite outbox, its worker flushing every 0.2 s) whose client
goes through the fault proxy of ``tests/faults.py``. For ``outage_s`` seconds the proxy closes
every connection that asks to track (the API is down: each of the worker's batches fails at the
socket) while the app makes ``tracks`` tracks, spread evenly over the outage. Then the proxy
forwards again (the API is back) and the worker drains the outbox by itself, with its own
backoff. The billing database (its file, not the API) must then hold each track once.

Figures: what a ``track()`` costs the app during the outage (a durable write: median and p99)
against the same track sent straight to the API in the same run (``BillingClient.track_usage``,
the baseline); how long the outbox takes to drain once the API is back, and how many delivery
tries the worker made while it was down. 60 s in the benchmark, 10 s in the CI test
(tests/outbox/test_tracker.py), 1 s at smoke size.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._harness import Goal, cli, judged
from bench.server_process import server_process
from billing_ui.core import BillingClient
from billing_ui.core.tracker import UsageTracker
from billing_ui.server.testing import query
from tests.faults import FaultProxy, close

TRACK_PATHS = ("/v1/usage/track-batch", "/v1/usage/track")
DRAIN_TIMEOUT_S = 600.0


def billed(database: Path, customer: str) -> tuple[int, int]:
    """(events, distinct idempotency keys) the billing database holds for ``customer``."""
    ((events, keys),) = query(
        database,
        "SELECT COUNT(*), COUNT(DISTINCT e.idempotency_key) FROM usage_events e "
        "JOIN customers c ON c.id = e.customer_id WHERE c.external_id = ?",
        (customer,),
    )
    return int(events), int(keys)


def _p(samples: list[float], q: float) -> float:
    return sorted(samples)[min(len(samples) - 1, int(q * len(samples)))]


def outage_then_back(
    server_url: str, database: Path, outbox: Path, *, outage_s: float, tracks: int
) -> dict[str, Any]:
    """Run the case against the server at ``server_url`` (whose database is ``database``);
    the raw findings. Raises if the outbox has not drained within ``DRAIN_TIMEOUT_S``."""
    with BillingClient(base_url=server_url, max_retries=0) as direct:
        customer = f"outage_{uuid.uuid4().hex[:8]}"
        direct.upsert_customer(customer_id=customer, products=["enterprise"])
        direct_s = []
        for _ in range(20):  # the baseline: a track sent straight to the API
            started = time.perf_counter()
            direct.track_usage(customer, feature_key="api_calls", quantity=1)
            direct_s.append(time.perf_counter() - started)
    baseline_events = billed(database, customer)[0]
    with (
        FaultProxy(server_url) as proxy,
        BillingClient(base_url=proxy.url, max_retries=0, timeout=2.0) as client,
        UsageTracker(client, outbox_path=outbox, flush_interval=0.2) as tracker,
    ):
        for path in TRACK_PATHS:
            proxy.on(path, *[close()] * 1_000_000)  # down
        enqueue_s = []
        began = time.monotonic()
        for i in range(tracks):
            time.sleep(max(0.0, began + i * outage_s / tracks - time.monotonic()))
            started = time.perf_counter()
            tracker.track(customer, "api_calls", 1)
            enqueue_s.append(time.perf_counter() - started)
        time.sleep(max(0.0, began + outage_s - time.monotonic()))
        depth_at_end = tracker.stats().depth
        billed_during = billed(database, customer)[0] - baseline_events
        tries_while_down = sum(len(proxy.seen(p)) for p in TRACK_PATHS)
        proxy.clear()  # back
        back = time.monotonic()
        while tracker.stats().depth:
            if time.monotonic() - back > DRAIN_TIMEOUT_S:
                raise RuntimeError(f"not drained in {DRAIN_TIMEOUT_S} s: {tracker.stats()}")
            time.sleep(0.02)
        drain_s = time.monotonic() - back
        stats = tracker.stats()
    events, keys = billed(database, customer)
    return {
        "outage_s": back - began,
        "tracks": tracks,
        "depth_at_end_of_outage": depth_at_end,
        "billed_during_outage": billed_during,
        "tries_while_down": tries_while_down,
        "drain_s": drain_s,
        "delivered": stats.delivered,
        "failed": stats.failed_total,
        "billed": events - baseline_events,
        "duplicates": (events - baseline_events) - (keys - baseline_events),
        "enqueue_p50_ms": statistics.median(enqueue_s) * 1e3,
        "enqueue_p99_ms": _p(enqueue_s, 0.99) * 1e3,
        "direct_p50_ms": statistics.median(direct_s) * 1e3,
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    outage_s, tracks = (1.0, 50) if smoke else (60.0, 1000)
    config = {"outage_s": outage_s, "tracks": tracks, "flush_interval_s": 0.2,
              "outbox": "SQLite file", "server": "SQLite, own process"}  # fmt: skip
    print(f"outage: {config}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        with server_process(tmp / "billing.db") as url:
            found = outage_then_back(
                url, tmp / "billing.db", tmp / "outbox.db", outage_s=outage_s, tracks=tracks
            )
    figures = {
        "tracks_made": tracks,
        "billed_during_outage": found["billed_during_outage"],
        "queued_at_end_of_outage": found["depth_at_end_of_outage"],
        "billed_after": found["billed"],
        "billed_missing": tracks - found["billed"],
        "billed_twice": found["duplicates"],
        "delivery_tries_while_down": found["tries_while_down"],
        "drain_s": round(found["drain_s"], 2),
        "drain_vs_outage_time_ratio": round(found["drain_s"] / found["outage_s"], 3),
        "enqueue_p50_ms": round(found["enqueue_p50_ms"], 3),
        "enqueue_p99_ms": round(found["enqueue_p99_ms"], 3),
        "direct_track_p50_ms": round(found["direct_p50_ms"], 3),
        "enqueue_vs_direct_time_ratio": round(found["enqueue_p50_ms"] / found["direct_p50_ms"], 3),
    }
    goals = {
        "billed_missing": Goal("0", lambda v: v == 0),
        "billed_twice": Goal("0", lambda v: v == 0),
        "drain_vs_outage_time_ratio": Goal(
            "<= 1 (the backlog is gone within one outage's length)", lambda v: v <= 1
        ),
        "enqueue_vs_direct_time_ratio": Goal(
            "<= 1.5 (a durable write costs about a round trip)", lambda v: v <= 1.5
        ),
    }
    return judged("outage", config, figures, goals)


if __name__ == "__main__":
    cli(run)
