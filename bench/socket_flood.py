"""Fault case and benchmark: one browser socket sending 5,000 track events as fast as it can.

    python -m bench.socket_flood [--smoke]

The billing server and the demo's Reflex backend run in their own processes, as in
``bench.many_sockets`` (whose tabs, acknowledgement counting and bystander this reuses); the
demo's durable track outbox is on (``BILLING_UI_OUTBOX_DB``, a fresh file) so tracks go through
the path an app ships with. One raw socket.io tab signed in as a customer with an unlimited
quota emits ``tracks`` ``TrackUsageState.track`` events without waiting for any answer, while
a bystander tab (another customer) hydrates again and again.

The per-tab token bucket (``browser_burst`` 30, ``browser_rate`` 5/s) refuses most of such a
flood before any request is made. "Exact totals" then means: every accepted track is in the
billing database (its file, read directly) exactly once (``accepted_counted_twice`` 0: one event
per idempotency key), no more were accepted than the bucket allows for the flood's duration
(``accepted_vs_bucket_allowance`` <= 1), the last total the tab was told is the server's
(``tab_last_shown_vs_server`` 1.0; Reflex coalesces the deltas of back-to-back events, so a
tab is not told each result separately), and the tab was told about the refusals ("Too many
requests from this page", once per 5 s at most: ``refusal_notices`` >= 1). Also: no failed
bystander hydrate, and the backend's RSS after the flood against before it (the baseline, same
process).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._harness import Goal, cli, judged
from bench._reflex_backend import reflex_backend
from bench._socketio import Tab
from bench.many_sockets import (
    BACKEND_ENV,
    BYSTANDER,
    FLOOD_CUSTOMER,
    QUIET_S,
    _names,
    consumed,
    hydrate_loop,
    p99,
    rss_figures,
    signed_in_tab,
)
from bench.outage import billed
from billing_ui.server.testing import server_process
from billing_ui.settings import BillingSettings
from billing_ui.states.base import TOO_MANY

BURST = BillingSettings.browser_burst
RATE = BillingSettings.browser_rate


def _more(tab: Tab, heard: int) -> bool:
    return len(tab.updates) > heard


async def one_tab_flood(
    url: str, tracks: int, ack_timeout: float, quiet_s: float = QUIET_S
) -> dict[str, Any]:
    """One tab emits ``tracks`` tracks back to back; a bystander hydrates meanwhile. The tab
    has heard every answer once it hears nothing for ``quiet_s``."""
    _, track, _, track_state = _names()
    bystander = await signed_in_tab(url, BYSTANDER)
    flooder = await signed_in_tab(url, FLOOD_CUSTOMER)
    stop = asyncio.Event()
    during: list[float] = []
    watcher = asyncio.create_task(hydrate_loop(bystander, stop, during))
    key = track_state.get_full_name()
    started = time.monotonic()
    for _ in range(tracks):
        await flooder.emit(track, {"feature_key": "api_calls", "quantity": 1})
    emitted_s = time.monotonic() - started
    deadline = time.monotonic() + ack_timeout
    while time.monotonic() < deadline:  # until the tab hears nothing more
        heard = len(flooder.updates)
        with contextlib.suppress(TimeoutError):
            await flooder.wait_for(functools.partial(_more, flooder, heard), quiet_s)
        if len(flooder.updates) == heard:
            break
    seconds = time.monotonic() - started - quiet_s
    stop.set()
    failed = await watcher
    notices = sum(TOO_MANY in json.dumps(update) for update in flooder.updates)
    shown = [
        last["consumed"]
        for update in flooder.updates
        if (last := ((update.get("delta") or {}).get(key) or {}).get("last_result_rx_state_"))
        and last.get("feature_key")
    ]
    await flooder.close()
    await bystander.close()
    return {
        "last_shown": max(shown, default=0.0),
        "emitted_s": emitted_s,
        "seconds": seconds,
        "notices": notices,
        "during": during,
        "failed_hydrates": failed,
    }


def measure(tracks: int, ack_timeout: float, quiet_s: float, *, warm: bool) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory() as tmp_dir,
        server_process(db_path=(db := Path(tmp_dir) / "b.db")) as srv,
        reflex_backend(
            {
                **BACKEND_ENV,
                "BILLINGOS_API_URL": srv.base_url,
                "BILLING_UI_OUTBOX_DB": str(Path(tmp_dir) / "outbox.db"),
            },
            Path(tmp_dir) / "backend.log",
        ) as backend,
    ):
        if warm:  # first compile of every state, first connection: one track
            asyncio.run(one_tab_flood(backend.url, 1, 60, quiet_s))
        rss_before = backend.rss_mb()
        events_before, keys_before = billed(db, FLOOD_CUSTOMER)
        out = asyncio.run(one_tab_flood(backend.url, tracks, ack_timeout, quiet_s))
        events, keys = billed(db, FLOOD_CUSTOMER)
        out["counted"], out["keys"] = events - events_before, keys - keys_before
        out["server_consumed"] = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER)
        out["rss_before"], out["rss_after"] = rss_before, backend.rss_mb()
    return out


def run(*, smoke: bool = False) -> dict[str, object]:
    tracks = 200 if smoke else 5000
    out = measure(
        tracks, 60.0 if smoke else 300.0, quiet_s=2.0 if smoke else QUIET_S, warm=not smoke
    )
    allowance = BURST + RATE * out["seconds"]
    figures: dict[str, float] = {
        "tracks_sent": tracks,
        "tracks_accepted": out["counted"],
        "tracks_refused": tracks - out["counted"],
        "accepted_counted_twice": out["counted"] - out["keys"],
        "tab_last_shown_vs_server": round(out["last_shown"] / out["server_consumed"], 6),
        "bucket_allowance": round(allowance, 1),
        "accepted_vs_bucket_allowance": round(out["counted"] / allowance, 3),
        "refusal_notices": out["notices"],
        "emit_s": round(out["emitted_s"], 2),
        "flood_s": round(out["seconds"], 2),
        "bystander_hydrates": len(out["during"]),
        "bystander_failed_hydrates": out["failed_hydrates"],
        "bystander_flood_p99_ms": round(p99(out["during"]) * 1000, 1),
        **rss_figures(out),
    }
    goals = {
        "accepted_counted_twice": Goal("0: every accepted track counted once", lambda v: v == 0),
        "tab_last_shown_vs_server": Goal(
            "1.0: the tab's last answer is the server's total", lambda v: v == 1.0
        ),
        "accepted_vs_bucket_allowance": Goal(
            "<= 1: no more accepted than the token bucket allows", lambda v: v <= 1
        ),
        "refusal_notices": Goal(">= 1: the tab is told about refusals", lambda v: v >= 1),
        "bystander_failed_hydrates": Goal("0", lambda v: v == 0),
        "rss_after_vs_before": Goal("<= 1.2", lambda v: v <= 1.2),
    }
    config = {"tracks": tracks, "tabs": 1, "browser_burst": BURST, "browser_rate": RATE,
              "outbox": "demo's SQLite outbox (BILLING_UI_OUTBOX_DB)"}  # fmt: skip
    return judged("socket_flood", config, figures, goals)


if __name__ == "__main__":
    cli(run)
