"""One upstream request per customer per interval across workers (issue 10): 2 worker
processes serve the tabs of 10 customers; every tab asks for its meters at the same tick.

Arms, each with the same tabs, customers and real local billing server over loopback:

- **redis**: both workers share a :class:`RedisQueryStore` (a throwaway ``redis-server``);
- **memory**: each worker has its own :class:`MemoryQueryStore` (billing_ui before issue 10);
- **per_tab**: every tab fetches its own meters, as BillingOS's React hooks do each interval.

A worker counts the upstream calls its store really made (each one a real HTTP request).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench._harness import cli, result

WORKERS = 2
ARMS = ("redis", "memory", "per_tab")


def _worker(job: tuple[Any, ...]) -> tuple[int, float]:
    """One backend worker: its tabs tick at once; returns (upstream calls, seconds)."""
    arm, url, key, redis_url, namespace, customers, tabs, barrier = job
    from billing_ui.core import AsyncBillingClient
    from billing_ui.core.cache import MemoryQueryStore, QueryStore
    from billing_ui.core.queries import QUERY_TYPES, BillingQueries
    from billing_ui.core.redis_cache import RedisQueryStore

    async def run() -> tuple[int, float]:
        client = AsyncBillingClient(base_url=url, api_key=key, max_retries=0)
        store: QueryStore = (
            RedisQueryStore(redis_url, namespace=namespace, types=QUERY_TYPES)
            if arm == "redis"
            else MemoryQueryStore()
        )
        queries = BillingQueries(client, store)
        calls = 0

        async def tick(customer: str) -> None:
            nonlocal calls
            if arm == "per_tab":
                calls += 1
                await client.get_usage_metrics(customer)
            else:
                await queries.usage_metrics(customer, stale_time=30)

        await store.size()  # connected before the start line
        await asyncio.get_running_loop().run_in_executor(None, barrier.wait)
        start = time.perf_counter()
        await asyncio.gather(*(tick(customers[i % len(customers)]) for i in range(tabs)))
        elapsed = time.perf_counter() - start
        await store.aclose()
        await client.aclose()
        return (calls if arm == "per_tab" else store.stats.fetches), elapsed

    return asyncio.run(run())


def _arm(pool: Any, barrier: Any, arm: str, args: tuple[Any, ...]) -> dict[str, float]:
    """One arm on the shared pool of worker processes (a fresh Redis namespace each time)."""
    url, key, redis_url, customers, tabs = args
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    job = (arm, url, key, redis_url, namespace, customers, tabs // WORKERS, barrier)
    outcomes = pool.map(_worker, [job] * WORKERS)
    return {"requests": sum(o[0] for o in outcomes), "seconds": max(o[1] for o in outcomes)}


def run(*, smoke: bool = False) -> dict[str, object]:
    from billing_ui.core.testing_redis import temp_redis
    from billing_ui.server.testing import create_customer, running_server

    tabs, n_customers = (100, 10) if smoke else (1_000, 10)
    config = {"workers": WORKERS, "tabs": tabs, "customers": n_customers, "ticks": 1}
    print(f"query_store_workers: {config}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    with (
        tempfile.TemporaryDirectory() as tmp,
        temp_redis() as redis_url,
        running_server(db_path=Path(tmp) / "billing.db") as server,
        ctx.Manager() as manager,
        ctx.Pool(WORKERS) as pool,
    ):
        customers = [create_customer(server, ["pro"]) for _ in range(n_customers)]
        args = (server.base_url, server.api_key, redis_url, customers, tabs)
        barrier = manager.Barrier(WORKERS)
        arms = {arm: _arm(pool, barrier, arm, args) for arm in ARMS}
    requests = {arm: arms[arm]["requests"] for arm in ARMS}
    figures: dict[str, float] = {
        "redis_upstream_requests": requests["redis"],
        "memory_upstream_requests": requests["memory"],
        "per_tab_upstream_requests": requests["per_tab"],
        "per_tab_over_redis": round(requests["per_tab"] / requests["redis"], 1),
        "memory_over_redis": round(requests["memory"] / requests["redis"], 2),
        "redis_tick_ms": round(arms["redis"]["seconds"] * 1000, 1),
        "per_tab_tick_ms": round(arms["per_tab"]["seconds"] * 1000, 1),
    }
    goals = {"redis_upstream_requests": f"<= {n_customers} (one per customer, not per worker)"}
    checks = {"redis_upstream_requests": requests["redis"] <= n_customers}
    return result("query_store_workers", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
