"""UsageTracker against the real local server over loopback: track() returns at once, the
worker sends batches of at most 100 or every interval, shutdown flushes, a full outbox pushes
back, fail-closed features are sent at once — and an app process killed with ``kill -9`` loses
nothing and doubles nothing (real subprocesses, real SIGKILL, the real fault proxy)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.outage import outage_then_back
from billing_ui.core import APIConnectionError, BillingClient, InvalidInputError, TrackUsageResult
from billing_ui.core.outbox import Outbox, OutboxFullError, OutboxStore, QueuedTrack
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.core.tracker import AsyncUsageTracker, UsageTracker
from billing_ui.server.testing import RunningServer, create_customer, server_process
from tests.faults import FaultProxy, close, drop_response, free_port
from tests.outbox.conftest import OpenStore, open_outbox_store
from tests.outbox.helpers import backed_off, billed, wait_until


@pytest.fixture
def proxy(billing_server: RunningServer) -> Iterator[FaultProxy]:
    with FaultProxy(billing_server.base_url) as p:
        yield p


def make_client(url: str) -> BillingClient:
    return BillingClient(base_url=url, max_retries=0, timeout=2.0)


def test_the_worker_sends_batches_of_at_most_100_and_loses_nothing(
    billing_server: RunningServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with (
        make_client(proxy.url) as client,
        UsageTracker(client, outbox_path=tmp_path / "o.db", flush_interval=1.0) as tracker,
    ):
        started = time.monotonic()
        queued = [tracker.track(customer, "api_calls", 1) for _ in range(250)]
        per_track = (time.monotonic() - started) / 250
        assert all(isinstance(q, QueuedTrack) for q in queued)
        wait_until(lambda: tracker.stats().depth == 0, what="the worker drains the outbox")
        assert tracker.stats().delivered == 250
    sizes = [len(r.json()["events"]) for r in proxy.seen("/v1/usage/track-batch")]  # type: ignore[index]
    assert sum(sizes) == 250
    assert max(sizes) <= 100
    assert billed(tmp_path / "billing.db", customer) == (250, 250)
    assert per_track < 0.5  # an fsync each, no network round trip


def test_a_lone_event_goes_out_within_the_interval(
    billing_server: RunningServer, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with (
        make_client(billing_server.base_url) as client,
        UsageTracker(client, outbox_path=tmp_path / "o.db", flush_interval=0.5) as tracker,
    ):
        tracker.track(customer, "api_calls", 3)
        wait_until(lambda: billed(tmp_path / "billing.db", customer) == (1, 1), timeout=10)


async def test_async_tracker_flushes_on_shutdown(
    billing_server: RunningServer, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    client = make_client(billing_server.base_url)
    # A long interval and a high flush_at: only the shutdown sends these.
    sync = UsageTracker(client, outbox_path=tmp_path / "o.db", flush_interval=60, flush_at=1000)
    async with AsyncUsageTracker(sync) as tracker:
        for _ in range(5):
            await tracker.track(customer, "api_calls", 1)
        assert billed(tmp_path / "billing.db", customer) == (0, 0)
    assert billed(tmp_path / "billing.db", customer) == (5, 5)
    client.close()


def test_a_full_outbox_pushes_back_then_raises(tmp_path: Path) -> None:
    store = SQLiteOutboxStore(tmp_path / "o.db")
    with (
        make_client(f"http://127.0.0.1:{free_port()}") as client,
        UsageTracker(
            client, outbox=Outbox(store, max_size=2), flush_interval=0.05, full_timeout=0.3
        ) as tracker,
    ):
        tracker.track("cus_a", "api_calls", 1)
        tracker.track("cus_a", "api_calls", 1)
        started = time.monotonic()
        with pytest.raises(OutboxFullError):
            tracker.track("cus_a", "api_calls", 1)
        assert time.monotonic() - started >= 0.3
        assert tracker.stats().depth == 2


def test_a_tracker_stopped_with_tracks_unsent_says_so_and_keeps_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No API on the port: the two tracks cannot go. Stopping says how many stay queued (a
    silent exit left a user wondering), and the outbox still holds them."""
    with make_client(f"http://127.0.0.1:{free_port()}") as client:
        tracker = UsageTracker(client, outbox_path=tmp_path / "o.db", flush_interval=0.05)
        tracker.track("cus_a", "api_calls", 1)
        tracker.track("cus_a", "api_calls", 2)
        with caplog.at_level("WARNING", logger="billing_ui"):
            tracker.shutdown(timeout=1.0)  # closes the outbox it opened
    warned = [r.getMessage() for r in caplog.records if "not sent yet" in r.getMessage()]
    assert warned == [
        "the usage tracker stopped with 2 tracks not sent yet in its durable outbox; any "
        "tracker on that outbox sends them (this one at its next start)"
    ]
    store = SQLiteOutboxStore(tmp_path / "o.db")  # the next start finds both
    try:
        assert Outbox(store).stats().depth == 2
    finally:
        store.close()


def test_fail_closed_features_are_sent_at_once(
    billing_server: RunningServer, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with (
        make_client(billing_server.base_url) as client,
        UsageTracker(client, outbox_path=tmp_path / "o.db", start=False) as tracker,
    ):
        assert isinstance(tracker.track(customer, "seats", 1), TrackUsageResult)
    with (
        make_client(f"http://127.0.0.1:{free_port()}") as down,
        UsageTracker(down, outbox_path=tmp_path / "o2.db", start=False) as tracker,
    ):
        with pytest.raises(APIConnectionError):
            tracker.track(customer, "seats", 1)
        with pytest.raises(InvalidInputError) as bad:
            tracker.track(customer, "api_calls", float("nan"))
        assert bad.value.field == "quantity"
        assert tracker.stats().depth == 0


LEASE_S = 3.0
"""The claim lease of the app processes: what a killed one had claimed waits this long."""


def _start(outbox: str, url: str, customer: str, n: int) -> subprocess.Popen[str]:
    script = Path(__file__).with_name("tracker_process.py")
    return subprocess.Popen(
        [sys.executable, str(script), str(outbox), url, customer, str(n), str(LEASE_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def test_app_killed_with_sigkill_while_tracks_are_queued_delivers_each_once(
    billing_server: RunningServer, proxy: FaultProxy, tmp_path: Path, outbox_location: str
) -> None:
    """1. The API is down; the app tracks 200 events and is killed (SIGKILL): all 200 are in
    the outbox file. 2. Restarted, its first batch reaches the server but the answer is lost,
    and it is killed again. 3. Restarted with the API healthy: the database holds exactly
    200 events, 200 distinct keys."""
    n = 200
    customer = create_customer(billing_server, ["pro"])
    outbox, db = outbox_location, tmp_path / "billing.db"
    proxy.on("/v1/usage/track-batch", *[close()] * 10_000)  # down
    app = _start(outbox, proxy.url, customer, n)
    try:
        assert app.stdout is not None and app.stdout.readline().strip() == f"queued {n}"
    finally:
        _kill9(app)
    store = open_outbox_store(outbox)
    try:
        assert store.stats(time.time(), 3600).depth == n
        assert billed(db, customer) == (0, 0)

        proxy.clear()
        proxy.on("/v1/usage/track-batch", drop_response())  # lands, answer lost
        app = _start(outbox, proxy.url, customer, 0)
        try:
            wait_until(lambda: billed(db, customer)[0] >= 100, what="the first batch lands")
        finally:
            _kill9(app)
        landed = billed(db, customer)
        assert landed[0] == landed[1] >= 100

        app = _start(outbox, billing_server.base_url, customer, 0)
        try:
            # Its predecessor's claim must run out first (LEASE_S), then backoff.
            wait_until(lambda: store.stats(time.time(), 3600).depth == 0, timeout=60)
        finally:
            assert app.stdin is not None
            app.stdin.close()
            app.wait(20)
        assert billed(db, customer) == (n, n)
    finally:
        store.close()


def test_api_down_while_1000_tracks_are_made_then_back_exactly_1000(tmp_path: Path) -> None:
    """The billing server in its own process; for 10 s the fault proxy closes every track
    request (the API is down) while the app's tracker makes 1,000 tracks, spread over the
    outage; every track() returns at once. Then the API is back: the worker drains by itself
    and the billing database holds exactly 1,000 events, none doubled (bench.outage: 60 s)."""
    n, db = 1000, tmp_path / "billing.db"
    with server_process(db_path=db) as server:
        found = outage_then_back(
            server.base_url, db, tmp_path / "o.db", outage_s=OUTAGE_S, tracks=n
        )
    assert found["tries_while_down"] >= 1, found  # the worker did try while it was down
    assert found["billed_during_outage"] == 0, found
    assert found["depth_at_end_of_outage"] == n, found
    assert (found["billed"], found["duplicates"], found["delivered"]) == (n, 0, n), found
    assert found["drain_s"] < OUTAGE_S, found  # backoff lets the backlog go within one outage


OUTAGE_S = 10.0


def test_two_workers_drain_one_outbox_each_event_sent_once(
    billing_server: RunningServer, proxy: FaultProxy, tmp_path: Path, open_store: OpenStore
) -> None:
    """Two trackers (two connections, as two app workers) drain one outbox of 500 events
    together: every key goes out in exactly one request, and the database holds 500."""
    n = 500
    customer = create_customer(billing_server, ["pro"])
    Outbox(open_store()).store.add(
        [QueuedTrack(f"{customer}-{i}", customer, "api_calls", 1.0) for i in range(n)],
        max_size=n,
    )
    with (
        make_client(proxy.url) as client,
        UsageTracker(client, outbox=Outbox(open_store()), flush_interval=0.05) as one,
        UsageTracker(client, outbox=Outbox(open_store()), flush_interval=0.05),
    ):
        wait_until(lambda: one.stats().depth == 0, timeout=30, what="both drain it")
    sent = [
        e["idempotency_key"]
        for r in proxy.seen("/v1/usage/track-batch")
        for e in r.json()["events"]  # type: ignore[index]
    ]
    assert sorted(sent) == sorted(f"{customer}-{i}" for i in range(n))
    assert billed(tmp_path / "billing.db", customer) == (n, n)


def test_after_an_outage_a_probe_sends_the_backlog_without_waiting_for_its_backoff(
    billing_server: RunningServer, proxy: FaultProxy, store: OutboxStore, tmp_path: Path
) -> None:
    """No new track arrives after the outage: while queued tracks back off, the worker asks
    the API every ``probe_interval`` whether it is back (``GET /health``), and when it is,
    sends the backlog at once instead of at each entry's own retry time (up to 300 s). The
    proxy plays the API down (connections closed) until the test lets it through."""
    customer = create_customer(billing_server, ["pro"])
    outbox = backed_off(store, customer, 5)
    proxy.on("/health", *[close()] * 10_000)  # still down
    with (
        make_client(proxy.url) as client,
        UsageTracker(client, outbox=outbox, flush_interval=0.1, probe_interval=0.3) as tracker,
    ):
        proxy.wait_for(lambda seen: sum(r.path == "/health" for r in seen) >= 2, timeout=10)
        assert tracker.stats().depth == 5 and not proxy.seen("/v1/usage/track-batch")
        proxy.clear()  # the API is back
        wait_until(lambda: tracker.stats().depth == 0, timeout=10, what="the backlog drains")
    assert billed(tmp_path / "billing.db", customer) == (5, 5)


def test_a_direct_track_that_goes_through_sends_the_backlog(
    billing_server: RunningServer, store: OutboxStore, tmp_path: Path
) -> None:
    """A track the app sends itself (``send_or_queue``, or the Reflex state's direct track via
    ``api_answered``) that reaches the API wakes the backed-off backlog: it leaves at once,
    not at its retry time, with no probe due (``probe_interval`` an hour)."""
    customer = create_customer(billing_server, ["pro"])
    outbox = backed_off(store, customer, 4)
    with (
        make_client(billing_server.base_url) as client,
        UsageTracker(client, outbox=outbox, flush_interval=0.1, probe_interval=3600) as tracker,
    ):
        result = tracker.send_or_queue(customer, "api_calls", 1)
        assert isinstance(result, TrackUsageResult)
        wait_until(lambda: tracker.stats().depth == 0, timeout=10, what="the backlog drains")
    assert billed(tmp_path / "billing.db", customer) == (5, 5)
