"""Helpers for the outbox tests: read what the billing database really holds, wait on a
condition with a deadline, and make an outbox whose tracks have backed off."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from billing_ui.core import BillingClient
from billing_ui.core.outbox import Outbox, OutboxStore
from tests.faults import free_port


def billed(db_path: Path | str, customer_id: str) -> tuple[int, int]:
    """(events, distinct idempotency keys) the local server's database holds for a customer —
    read from the file itself, not through the API under test."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT count(*), count(DISTINCT e.idempotency_key) FROM usage_events e "
            "JOIN customers c ON c.id = e.customer_id WHERE c.external_id = ?",
            (customer_id,),
        ).fetchone()
    finally:
        db.close()
    return int(row[0]), int(row[1])


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    """Poll ``predicate`` every 20 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate}")
        time.sleep(0.02)


def backed_off(store: OutboxStore, customer: str, n: int) -> Outbox:
    """An outbox on ``store`` whose ``n`` tracks have backed off after five failed passes (the
    next attempt ~16 s ahead), on a clock that then stands still: from here on they are due
    only if something wakes them."""
    now = [1_000.0]
    outbox = Outbox(store, clock=lambda: now[0])
    for i in range(n):
        outbox.put(customer, "api_calls", 1, idempotency_key=f"waiting-{i}")
    down_url = f"http://127.0.0.1:{free_port()}"  # nothing listens: down
    with BillingClient(base_url=down_url, max_retries=0) as down:
        for _ in range(5):
            assert outbox.deliver(down).retried == n
            now[0] += 301
        now[0] -= 301  # the clock stops just after the last failed pass
    return outbox
