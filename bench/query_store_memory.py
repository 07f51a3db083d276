"""The in-memory query store after many customers have come and gone (issue 10): memory stays
bounded by its size limit, and invalidating one customer costs the same whatever the store holds.

- **memory**: ``tracemalloc`` of a store with ``max_entries = LIMIT`` just filled to the limit
  (the baseline), then after ``CHURN`` distinct customers have each been fetched once. Beside it,
  the unbounded dict the query cache was before (every key kept forever) after the same churn.
- **invalidation**: the median time to invalidate one customer's keys in a store of ``SMALL``
  customers and in one of ``LARGE`` (the prefix index); the baseline is the scan of every key
  the cache did before, on the same ``LARGE`` keys.

Each customer has two keys (its metrics and one feature check), as a dashboard tab makes.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
import tracemalloc
from collections.abc import Hashable

from bench._harness import cli, result
from billing_ui.core.cache import MemoryQueryStore

Key = tuple[Hashable, ...]


async def _payload() -> dict[str, float]:
    return {"consumed": 1.0, "limit": 100.0}


async def _visit(store: MemoryQueryStore, customer: str) -> None:
    await store.fetch(("usage-metrics", customer), _payload, stale_time=30)
    await store.fetch(("feature-check", customer, "api_calls"), _payload, stale_time=30)


async def _memory(limit: int, churn: int) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        store = MemoryQueryStore(max_entries=limit * 2)
        for i in range(limit):
            await _visit(store, f"cust_{i}")
        gc.collect()
        at_limit = tracemalloc.get_traced_memory()[0] - base
        for i in range(limit, churn):
            await _visit(store, f"cust_{i}")
        gc.collect()
        after = tracemalloc.get_traced_memory()[0] - base
        entries = len(store)
        del store
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        unbounded = MemoryQueryStore(max_entries=churn * 2)  # nothing is ever dropped
        for i in range(churn):
            await _visit(unbounded, f"cust_{i}")
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - base
        del unbounded
    finally:
        tracemalloc.stop()
    return {"at_limit": at_limit, "after": after, "entries": entries, "unbounded": kept}


async def _filled(customers: int) -> MemoryQueryStore:
    store = MemoryQueryStore(max_entries=customers * 2)
    for i in range(customers):
        await _visit(store, f"cust_{i}")
    return store


async def _invalidate_time(store: MemoryQueryStore, customers: int, rounds: int) -> float:
    times = []
    step = max(customers // rounds, 1)
    for i in range(0, customers, step):
        start = time.perf_counter()
        await store.invalidate(("usage-metrics", f"cust_{i}"))
        await store.invalidate(("feature-check", f"cust_{i}"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _scan_time(keys: list[Key], customers: int, rounds: int) -> float:
    """The invalidation of the cache before the index: test every key against the prefix."""
    times = []
    step = max(customers // rounds, 1)
    for i in range(0, customers, step):
        start = time.perf_counter()
        for prefix in (("usage-metrics", f"cust_{i}"), ("feature-check", f"cust_{i}")):
            sum(1 for key in keys if key[: len(prefix)] == prefix)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def _measure(limit: int, churn: int, small: int, large: int) -> dict[str, float]:
    mem = await _memory(limit, churn)
    small_store, large_store = await _filled(small), await _filled(large)
    rounds = 200
    t_small = await _invalidate_time(small_store, small, rounds)
    t_large = await _invalidate_time(large_store, large, rounds)
    t_scan = _scan_time(list(large_store._slots), large, 20)
    return {
        "memory_after_churn_over_at_limit": round(mem["after"] / mem["at_limit"], 3),
        "unbounded_over_bounded_memory": round(mem["unbounded"] / mem["after"], 2),
        "entries_after_churn": mem["entries"],
        "memory_at_limit_kib": round(mem["at_limit"] / 1024),
        "memory_after_churn_kib": round(mem["after"] / 1024),
        "invalidate_large_over_small": round(t_large / t_small, 3),
        "scan_over_index_at_large": round(t_scan / t_large, 1),
        "invalidate_small_us": round(t_small * 1e6, 2),
        "invalidate_large_us": round(t_large * 1e6, 2),
        "scan_large_us": round(t_scan * 1e6, 1),
    }


def run(*, smoke: bool = False) -> dict[str, object]:
    limit, churn = (200, 2_000) if smoke else (1_000, 100_000)
    small, large = (200, 2_000) if smoke else (1_000, 100_000)
    config = {
        "limit_customers": limit,
        "max_entries": limit * 2,
        "churn_customers": churn,
        "keys_per_customer": 2,
        "small_customers": small,
        "large_customers": large,
    }
    print(f"query_store_memory: {config}", flush=True)
    figures = asyncio.run(_measure(limit, churn, small, large))
    goals = {
        "memory_after_churn_over_at_limit": "<= 1.2 (bounded by the size limit)",
        "entries_after_churn": f"<= {limit * 2} (max_entries)",
        "invalidate_large_over_small": "<= 2 (independent of the number of entries)",
    }
    checks = {
        "memory_after_churn_over_at_limit": figures["memory_after_churn_over_at_limit"] <= 1.2,
        "entries_after_churn": figures["entries_after_churn"] <= limit * 2,
        "invalidate_large_over_small": figures["invalidate_large_over_small"] <= 2,
    }
    return result("query_store_memory", config, figures, goals, checks)


if __name__ == "__main__":
    cli(run)
