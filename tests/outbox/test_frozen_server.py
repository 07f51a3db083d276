"""The billing server as its own OS process, frozen with SIGSTOP while tracks are made: every
track times out and is queued; after SIGCONT the server also works off the requests it had
received while frozen — and the outbox's redelivery, carrying the same keys, is not counted
again: the database holds each event once."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core.outbox import Outbox, QueuedTrack
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.server.testing import server_process
from tests.outbox.helpers import billed


async def test_frozen_server_tracks_time_out_are_queued_then_delivered_once(
    tmp_path: Path,
) -> None:
    n = 20
    db = tmp_path / "billing.db"
    with server_process(db_path=db) as server:
        customer = f"cus_frozen_{uuid.uuid4().hex[:8]}"
        httpx.put(
            f"{server.base_url}/v1/customers/{customer}",
            json={"products": ["pro"]},
            headers={"Authorization": f"Bearer {server.api_key}"},
        ).raise_for_status()
        outbox = Outbox(SQLiteOutboxStore(tmp_path / "outbox.db"))
        server.pause()
        try:
            async with AsyncBillingClient(
                base_url=server.base_url, max_retries=0, timeout=1.0
            ) as client:
                outcomes = await asyncio.gather(
                    *(outbox.atrack_or_queue(client, customer, "api_calls", 1) for _ in range(n))
                )
        finally:
            server.resume()
        assert all(isinstance(o, QueuedTrack) for o in outcomes)
        assert all("Timeout" in o.last_error for o in outcomes if isinstance(o, QueuedTrack))
        assert outbox.stats().depth == n
        with BillingClient(base_url=server.base_url, max_retries=0, timeout=10.0) as sync:
            report = outbox.deliver(sync)
        assert (report.delivered, report.failed, report.retried) == (n, 0, 0)
        assert billed(db, customer) == (n, n)
        outbox.store.close()
