"""What the durable outbox costs and gains: a track written to the outbox (an fsync'd SQLite
commit) against the same track sent straight to the billing API, and draining the outbox in
batches against one request per event.

Baseline, measured in the same run: ``BillingClient.track_usage`` against the local billing
server (its own process, SQLite, loopback), one track after another. Arms: ``UsageTracker.track``
with its worker off (only the durable write; the figure an app's request pays), and
``Outbox.deliver`` of the queued events in batches of 100 (``/v1/usage/track-batch``) and one by
one (a backend without batches). Each arm runs ``rounds`` times, interleaved; the medians count.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench._harness import cli, result
from bench.server_process import server_process
from billing_ui.core import BillingClient
from billing_ui.core.outbox import Outbox
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.core.tracker import UsageTracker


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _round(client: BillingClient, tmp: Path, customer: str, n: int) -> dict[str, float]:
    """One round of every arm: seconds per event for each."""
    out: dict[str, float] = {}
    out["direct"] = _timed(
        lambda: [
            client.track_usage(customer, feature_key="api_calls", quantity=1) for _ in range(n)
        ]
    )
    for arm, batches in (("batched", True), ("single", False)):
        store = SQLiteOutboxStore(tmp / f"outbox-{uuid.uuid4().hex}.db")
        outbox = Outbox(store, batches=batches)
        tracker = UsageTracker(client, outbox=outbox, start=False)
        if batches:

            def enqueue_all(t: UsageTracker = tracker) -> None:
                for _ in range(n):
                    t.track(customer, "api_calls", 1)

            out["enqueue"] = _timed(enqueue_all)
        else:
            for _ in range(n):
                tracker.track(customer, "api_calls", 1)

        def drain(o: Outbox = outbox) -> None:
            while o.deliver(client, 100).claimed:
                pass

        out[arm] = _timed(drain)
        if outbox.stats().delivered != n:
            raise RuntimeError(f"{arm}: delivered {outbox.stats().delivered} of {n}")
        tracker.shutdown()
        store.close()
    return {arm: seconds / n for arm, seconds in out.items()}


def run(*, smoke: bool = False) -> dict[str, object]:
    n, rounds = (40, 1) if smoke else (1000, 5)
    config = {"events_per_arm_round": n, "rounds": rounds, "batch_size": 100, "server": "SQLite"}
    print(f"outbox: {config}", flush=True)
    with tempfile.TemporaryDirectory() as tmp_dir, server_process(Path(tmp_dir) / "b.db") as url:
        tmp = Path(tmp_dir)
        with BillingClient(base_url=url, max_retries=0) as client:
            customer = f"bench_outbox_{uuid.uuid4().hex[:8]}"
            client.upsert_customer(customer_id=customer, products=["enterprise"])
            samples = [_round(client, tmp, customer, n) for _ in range(rounds)]
    med = {arm: statistics.median(s[arm] for s in samples) for arm in samples[0]}
    figures = {
        "direct_ms_per_track": round(med["direct"] * 1e3, 3),
        "enqueue_ms_per_track": round(med["enqueue"] * 1e3, 3),
        "enqueue_vs_direct_time_ratio": round(med["enqueue"] / med["direct"], 3),
        "drain_batched_events_per_s": round(1 / med["batched"]),
        "drain_single_events_per_s": round(1 / med["single"]),
        "drain_batched_vs_direct_speed_ratio": round(med["direct"] / med["batched"], 2),
        "drain_single_vs_direct_speed_ratio": round(med["direct"] / med["single"], 2),
    }
    goals = {
        "enqueue_vs_direct_time_ratio": "<= 1.5 (a durable write costs about a round trip)",
        "drain_batched_vs_direct_speed_ratio": ">= 5 (batches drain a backlog much faster)",
    }
    checks = {
        "enqueue_vs_direct_time_ratio": figures["enqueue_vs_direct_time_ratio"] <= 1.5,
        "drain_batched_vs_direct_speed_ratio": figures["drain_batched_vs_direct_speed_ratio"] >= 5,
    }
    return result("outbox", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
