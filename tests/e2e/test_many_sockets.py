"""Many tabs tracking at once (issue 8, part 4), at a size a test can afford.

The demo's Reflex backend runs as its own process (``reflex run --backend-only``) against the
real billing server process; raw socket.io clients play the tabs, as ``bench.many_sockets``
does at full size (200 tabs x 20 tracks). Every track must be acknowledged to its tab and
counted by the billing server exactly once, and a bystander tab hydrating throughout must
never go unanswered.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench._reflex_backend import reflex_backend
from bench.many_sockets import BACKEND_ENV, FLOOD_CUSTOMER, consumed, flood
from billing_ui.server.testing import server_process

TABS, TRACKS = 40, 10


def test_every_track_of_many_tabs_is_acknowledged_and_counted_once(tmp_path: Path) -> None:
    with (
        server_process(db_path=tmp_path / "billing.db") as srv,
        reflex_backend(
            {**BACKEND_ENV, "BILLINGOS_API_URL": srv.base_url}, tmp_path / "backend.log"
        ) as backend,
    ):
        asyncio.run(flood(backend.url, 1, 1, 60))  # warm-up: states compiled, pool open
        before = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER)
        out = asyncio.run(flood(backend.url, TABS, TRACKS, ack_timeout=120))
        counted = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER) - before
    assert out["acked"] == TABS * TRACKS, out["acked"]
    assert counted == TABS * TRACKS
    assert out["failed_hydrates"] == 0 and out["during"], out["failed_hydrates"]
    assert max(out["during"]) < 10.0
