"""Many tabs tracking at once while their meters poll (issues 8 part 4, 12 part 3), at a size a
test can afford.

The demo's Reflex backend runs as its own process (``reflex run --backend-only``) against the
real billing server process; raw socket.io clients play the tabs, as ``bench.many_sockets``
does at full size (200 tabs x 20 tracks). Each tab opens the playground page, so its metrics
loop (``UsageMetricsState.poll``, the page's ``on_load``) runs as in a browser, and the demo
tracks through its durable outbox. Every track must be acknowledged to its tab and counted by
the billing server exactly once, every tab's meter must end on the server's total, every
loop must run throughout and end with its tab, nothing may stay queued, and a bystander tab
hydrating throughout must never go unanswered. Then a second flood on the same backend must
fare the same: a backend that survived one flood used to acknowledge a few hundred of 4,000
the second time (live-meter pushes had piled up at the tabs' state locks, issue 8).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench._reflex_backend import reflex_backend
from bench.many_sockets import BACKEND_ENV, FLOOD_CUSTOMER, backend_gauge, consumed, flood
from billing_ui.server.testing import server_process

TABS, TRACKS = 40, 10
POLL_S = "2"  # every tab's loop ticks several times during the flood


def test_every_track_of_many_polling_tabs_is_acknowledged_and_counted_once(
    tmp_path: Path,
) -> None:
    env = {**BACKEND_ENV, "BILLING_UI_REFRESH_INTERVAL": POLL_S}
    with (
        server_process(db_path=tmp_path / "billing.db") as srv,
        reflex_backend({**env, "BILLINGOS_API_URL": srv.base_url}, tmp_path / "backend.log") as be,
    ):
        asyncio.run(flood(be.url, 1, 1, 60))  # warm-up: states compiled, pool open
        for which in ("first", "second"):  # two floods, one backend
            before = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER)
            out = asyncio.run(flood(be.url, TABS, TRACKS, ack_timeout=120, server=srv))
            counted = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER) - before
            queued = backend_gauge(be.url, "billing_ui_outbox_depth")
            assert out["acked"] == TABS * TRACKS, (which, out["acked"])
            assert counted == TABS * TRACKS, which
            assert out["polling_at_start"] == TABS and out["polling_min"] == TABS, (which, out)
            assert out["metric_updates"] >= TABS, which  # loops and pushes reached every tab
            assert out["converged"] == TABS, (which, out["converged"])
            assert out["polling_after"] == 0, (which, out["polling_after"])
            assert queued == 0, which
            assert out["failed_hydrates"] == 0 and out["during"], (which, out["failed_hydrates"])
            assert max(out["during"]) < 10.0, which
