"""Helpers for the outbox tests: read what the billing database really holds, and wait on a
condition with a deadline."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path


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
