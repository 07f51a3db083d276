"""One browser socket flooding the demo's Reflex backend with 1,000 track events back to back
(``bench.socket_flood`` sends 5,000), the demo's durable outbox in the path: the per-tab token
bucket refuses most of them before any request is made. What was accepted is in the billing
database exactly once (one event per idempotency key), no more than the bucket allows, the
tab's last answer is the server's total, the tab was told about the refusals, and a bystander
tab hydrating throughout is always answered. Real processes: the billing server, the Reflex
backend (``reflex run --backend-only``), raw socket.io clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench._reflex_backend import reflex_backend
from bench.many_sockets import BACKEND_ENV, FLOOD_CUSTOMER, consumed
from bench.socket_flood import BURST, RATE, billed, one_tab_flood
from billing_ui.server.testing import server_process

TRACKS = 1000


def test_one_socket_flooding_tracks_is_refused_and_what_is_accepted_counts_once(
    tmp_path: Path,
) -> None:
    db = tmp_path / "billing.db"
    env = {**BACKEND_ENV, "BILLING_UI_OUTBOX_DB": str(tmp_path / "outbox.db")}
    with (
        server_process(db_path=db) as srv,
        reflex_backend(
            {**env, "BILLINGOS_API_URL": srv.base_url}, tmp_path / "backend.log"
        ) as backend,
    ):
        events_before, keys_before = billed(db, FLOOD_CUSTOMER)
        out = asyncio.run(one_tab_flood(backend.url, TRACKS, ack_timeout=120, quiet_s=3.0))
        events, keys = billed(db, FLOOD_CUSTOMER)
        server_total = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER)
    accepted = events - events_before
    assert keys - keys_before == accepted  # each accepted track counted once
    assert BURST <= accepted <= BURST + RATE * out["seconds"], (accepted, out["seconds"])
    assert accepted < TRACKS  # the flood was refused in part ...
    assert out["notices"] >= 1  # ... and the tab was told so
    assert out["last_shown"] == server_total
    assert out["failed_hydrates"] == 0 and out["during"]
