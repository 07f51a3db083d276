"""A closed tab's states leave the backend's memory and nothing of them is lost (issue 8 §3, §4:
no browser can grow the app's memory; ``billing_ui.server_memory.release_closed_tabs``).

Why: Reflex's disk state manager keeps every tab's states in memory for an hour after their last
use, open tab or not, so a burst of tabs (or a script opening socket after socket with new
tokens) held their memory for that hour. The demo's backend runs as its own process against the
real billing server; raw socket.io clients play the tabs (``bench/_socketio.py``); the backend's
``/metrics`` tells what its sweeps did.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench._reflex_backend import reflex_backend
from bench._socketio import Tab
from bench.many_sockets import (
    BACKEND_ENV,
    BYSTANDER,
    FLOOD_CUSTOMER,
    RELEASED,
    backend_gauge,
    signed_in_tab,
    wait_released,
)
from billing_ui.demo.session import DemoSessionState
from billing_ui.server.testing import server_process

CLOSED = 3
DEADLINE_S = 60.0
"""A sweep every 5 s drops states idle for 10 s: well within."""


def test_closed_tabs_states_leave_memory_open_ones_stay_and_a_returning_tab_is_still_signed_in(
    tmp_path: Path,
) -> None:
    with (
        server_process(db_path=tmp_path / "billing.db") as srv,
        reflex_backend(
            {**BACKEND_ENV, "BILLINGOS_API_URL": srv.base_url}, tmp_path / "backend.log"
        ) as be,
    ):

        async def scenario() -> None:
            staying = await signed_in_tab(be.url, BYSTANDER)  # open, and idle from now on
            closing = [await signed_in_tab(be.url, FLOOD_CUSTOMER) for _ in range(CLOSED)]
            for tab in closing:
                await tab.close()
            # Every closed tab dropped, and the sweep that did it kept exactly one: the open
            # tab, idle as long as they were (no socket check, and it would be gone too).
            kept = await wait_released(be.url, CLOSED, DEADLINE_S, keeps=1)
            assert kept == 1, f"{kept} tabs' states kept in memory, not the open tab's alone"
            assert backend_gauge(be.url, RELEASED) == CLOSED

            # A closed tab that comes back (same token: a reload, a laptop waking) finds what
            # it had, read back from disk: still signed in. A new tab is not (the control).
            async with Tab(be.url, token=closing[0].token) as back, Tab(be.url) as new:
                await back.hydrate()
                await new.hydrate()
                assert back.state(DemoSessionState).get("signed_in_as") == FLOOD_CUSTOMER
                assert new.state(DemoSessionState).get("signed_in_as") == ""
            await staying.close()

        asyncio.run(scenario())
