"""Running the service's reads from ``async`` routes without stalling the event loop.

SQLite reads are local and take tens of microseconds on the loop thread's own WAL reader, which
is cheaper than a hop to a worker thread and back, so they run inline. PostgreSQL reads are
network round trips (a millisecond or more, longer when the database is busy); run inline, each
would stall every other request of the process, so they run in the thread pool. The store says
which it is (:attr:`~billing_ui.server.store.UsageStore.inline_reads`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from starlette.concurrency import run_in_threadpool

from billing_ui.server.store import UsageStore

P = ParamSpec("P")
T = TypeVar("T")


async def read(store: UsageStore, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``call(*args, **kwargs)``: inline if ``store`` reads locally, else in the thread pool."""
    if store.inline_reads:
        return call(*args, **kwargs)
    return await run_in_threadpool(call, *args, **kwargs)
