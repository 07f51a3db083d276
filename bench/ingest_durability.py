"""What ``synchronous=FULL`` costs the local server's ingest against ``NORMAL`` (SQLite, WAL).

FULL, the default, fsyncs the write-ahead log at each commit, so a track the server has
acknowledged survives a power loss; NORMAL syncs only at checkpoints (a crashed process loses
nothing, a machine losing power may lose the last commits). The cost is one fsync per commit,
so it is measured where commits are many — one event per request — and where they are few —
batches of 1,000 (``/v1/usage/track-batch``).

Baseline, measured in the same run: the same server (``python -m billing_ui.server``, its own
process, a fresh SQLite file, loopback) with ``BILLING_UI_SQLITE_SYNCHRONOUS=NORMAL``. The two
modes run in alternating rounds, each on its own fresh file; the medians count.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench._harness import cli, result
from bench.server_process import server_process
from billing_ui.core._constants import LOCAL_SECRET_KEY
from billing_ui.server.sqlite_store import SYNCHRONOUS_ENV

MODES = ("FULL", "NORMAL")
BATCH = 1000


@contextmanager
def _server(mode: str, db: Path) -> Iterator[str]:
    previous = os.environ.get(SYNCHRONOUS_ENV)
    os.environ[SYNCHRONOUS_ENV] = mode  # the server process inherits it
    try:
        with server_process(db) as url:
            yield url
    finally:
        if previous is None:
            os.environ.pop(SYNCHRONOUS_ENV, None)
        else:
            os.environ[SYNCHRONOUS_ENV] = previous


def _round(mode: str, folder: Path, singles: int, batches: int) -> dict[str, float]:
    """Events per second, one per request and in batches, on a fresh file in ``mode``."""
    headers = {"Authorization": f"Bearer {LOCAL_SECRET_KEY}"}
    with (
        _server(mode, folder / f"{mode}-{uuid.uuid4().hex[:8]}.db") as url,
        httpx.Client(base_url=url, headers=headers, timeout=60) as http,
    ):
        customer = f"bench_sync_{uuid.uuid4().hex[:8]}"
        body = {"products": ["enterprise"], "status": "active"}
        http.put(f"/v1/customers/{customer}", json=body).raise_for_status()

        def event(i: int, tag: str) -> dict[str, object]:
            return {
                "customer_id": customer,
                "feature_key": "api_calls",
                "quantity": 1,
                "idempotency_key": f"{tag}-{i}",
            }

        start = time.perf_counter()
        for i in range(singles):
            http.post("/v1/usage/track", json=event(i, "s")).raise_for_status()
        single = singles / (time.perf_counter() - start)
        start = time.perf_counter()
        for b in range(batches):
            events = [event(b * BATCH + i, "b") for i in range(BATCH)]
            http.post("/v1/usage/track-batch", json={"events": events}).raise_for_status()
        batched = batches * BATCH / (time.perf_counter() - start)
    return {"single": single, "batch": batched}


def run(*, smoke: bool = False) -> dict[str, object]:
    singles, batches, rounds = (30, 2, 1) if smoke else (500, 20, 3)
    config = {
        "single_events_per_round": singles,
        "batches_per_round": batches,
        "batch_size": BATCH,
        "rounds_per_mode": rounds,
        "server": "SQLite, WAL, one process",
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    print(f"ingest_durability: {config}", flush=True)
    samples: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(rounds):
            for mode in MODES:  # alternating: load changes hit both modes alike
                samples[mode].append(_round(mode, Path(tmp), singles, batches))
    med = {
        (mode, arm): statistics.median(s[arm] for s in samples[mode])
        for mode in MODES
        for arm in ("single", "batch")
    }
    figures = {
        "full_single_events_per_s": round(med["FULL", "single"]),
        "normal_single_events_per_s": round(med["NORMAL", "single"]),
        "full_vs_normal_single_ratio": round(med["FULL", "single"] / med["NORMAL", "single"], 3),
        "full_batch_events_per_s": round(med["FULL", "batch"]),
        "normal_batch_events_per_s": round(med["NORMAL", "batch"]),
        "full_vs_normal_batch_ratio": round(med["FULL", "batch"] / med["NORMAL", "batch"], 3),
    }
    goals = {
        "full_vs_normal_batch_ratio": ">= 0.9 (durability costs batches little)",
        "full_vs_normal_single_ratio": ">= 0.5 (one fsync per request at most halves it)",
    }
    checks = {
        "full_vs_normal_batch_ratio": figures["full_vs_normal_batch_ratio"] >= 0.9,
        "full_vs_normal_single_ratio": figures["full_vs_normal_single_ratio"] >= 0.5,
    }
    return result("ingest_durability", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
