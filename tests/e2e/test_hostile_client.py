"""What any client can send: a raw socket.io client (python-socketio, which ships with Reflex)
talks to the app's backend the way the browser does, but with payloads no UI would send.

Every refused payload must leave the server's counts unchanged, and nothing the backend sends
may contain the secret API key.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import socketio
from reflex.testing import AppHarness

from billing_ui.server.testing import RunningServer
from billing_ui.states import TrackUsageState, UsageMetricsState
from billing_ui.states.entitlements import CHECKS
from billing_ui.states.history import HISTORIES
from billing_ui.states.split_map import SplitMap
from tests.faults import FaultProxy

from .test_states_browser import app, billing  # noqa: F401 - the same app and server fixtures

TRACK = "/v1/usage/track"
NAMESPACE = "/_event"  # Reflex serves socket.io at this path, in this namespace


def backend_url(harness: AppHarness) -> str:
    assert harness.backend is not None
    port = harness.backend.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}"


def event_name(handler: Any) -> str:
    return f"{handler.state_full_name}.{handler.fn.__name__}"


class RawClient:
    """A socket.io client that records everything the backend sends it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = str(uuid.uuid4())
        self.received: list[Any] = []
        self.sio = socketio.Client(reconnection=False)
        self.sio.on("event", self._on_event, namespace=NAMESPACE)
        self._cond = threading.Condition()

    def _on_event(self, data: Any) -> None:
        with self._cond:
            self.received.append(data)
            self._cond.notify_all()

    def __enter__(self) -> RawClient:
        self.sio.connect(
            f"{self.url}?token={self.token}",
            socketio_path=NAMESPACE,
            namespaces=[NAMESPACE],
            transports=["websocket"],
        )
        self.send("reflex___state____state.hydrate", {})
        self.wait_for(lambda: any("delta" in r for r in self.received))
        return self

    def __exit__(self, *exc: object) -> None:
        self.sio.disconnect()

    def send(self, name: str, payload: dict[str, Any]) -> None:
        self.sio.emit(
            "event",
            {"name": name, "payload": payload, "router_data": {"pathname": "/", "query": {}}},
            namespace=NAMESPACE,
        )

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"condition not met; received {self.received!r}")
                self._cond.wait(left)

    def track_state(self) -> dict[str, Any]:
        """The TrackUsageState vars as last sent to this client (merged deltas)."""
        return self.state_of(TrackUsageState)

    def state_of(self, cls: Any) -> dict[str, Any]:
        """A state's vars as last sent to this client (merged deltas)."""
        merged: dict[str, Any] = {}
        key = cls.get_full_name()
        for update in list(self.received):
            merged.update((update.get("delta") or {}).get(key) or {})
        return {k.removesuffix("_rx_state_"): v for k, v in merged.items()}

    def map_of(self, cls: Any, split: SplitMap[Any]) -> dict[str, Any]:
        """A map var kept in bucket vars (``billing_ui.states.split_map``) as last sent to this
        client, merged as the browser merges it."""
        state = self.state_of(cls)
        merged: dict[str, Any] = {}
        for bucket in split.buckets:
            merged.update(state.get(bucket) or {})
        return merged

    def largest_update(self) -> int:
        """Bytes of the largest update the backend sent this client."""
        return max((len(json.dumps(u)) for u in list(self.received)), default=0)

    def total_bytes(self) -> int:
        return sum(len(json.dumps(u)) for u in list(self.received))


HOSTILE: list[tuple[str, dict[str, Any], str]] = [
    ("negative", {"feature_key": "api_calls", "quantity": -1}, "quantity"),
    ("zero", {"feature_key": "api_calls", "quantity": 0}, "quantity"),
    ("nan", {"feature_key": "api_calls", "quantity": math.nan}, "quantity"),
    ("huge", {"feature_key": "api_calls", "quantity": 10**30}, "quantity"),
    ("string", {"feature_key": "api_calls", "quantity": "seven"}, "quantity"),
    ("unknown feature", {"feature_key": "nope", "quantity": 1}, "feature_key"),
    ("not allowlisted", {"feature_key": "seats", "quantity": 1}, "feature_key"),
    ("customer argument", {"feature_key": "api_calls", "quantity": 1, "customer": "x"}, "customer"),
    (
        "big metadata",
        {"feature_key": "api_calls", "quantity": 1, "metadata": {"x": "y" * 5000}},
        "metadata",
    ),
]


@pytest.mark.parametrize(("case", "payload", "field"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_payloads_are_refused(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
    case: str,
    payload: dict[str, Any],
    field: str,
) -> None:
    server, proxy = billing
    before = consumed(server)
    tracks = tracks_sent(proxy)

    with RawClient(backend_url(app)) as client:
        handler = (
            TrackUsageState.track_with_metadata if "metadata" in payload else TrackUsageState.track
        )
        client.send(event_name(handler), payload)
        client.wait_for(lambda: client.track_state().get("is_error") is True)
        state = client.track_state()
    assert field in state["error"], state["error"]
    assert tracks_sent(proxy) == tracks, "a refused track reached the billing API"
    assert consumed(server) == before


def test_the_api_key_never_reaches_the_client(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
) -> None:
    server, _ = billing

    with RawClient(backend_url(app)) as client:
        client.send(event_name(UsageMetricsState.refetch), {})
        client.send(event_name(TrackUsageState.track), {"feature_key": "api_calls"})
        client.wait_for(lambda: client.track_state().get("is_success") is True)
        received = list(client.received)
    wire = json.dumps(received)
    assert "api_calls" in wire  # we did receive billing data
    assert server.api_key not in wire
    assert "sk_test" not in wire and "bos_session_" not in wire


def consumed(server: RunningServer) -> float:
    r = httpx.get(
        f"{server.base_url}/v1/usage/metrics",
        params={"customer_id": os.environ["BUI_E2E_CUSTOMER"], "feature_key": "api_calls"},
        headers=server.auth(),
    )
    r.raise_for_status()
    return float(
        next(m["consumed"] for m in r.json()["metrics"] if m["feature_key"] == "api_calls")
    )


# --- floods: no browser can grow the app's memory or its upstream traffic (issue 8, part 3) ---
def tracks_sent(proxy: FaultProxy) -> int:
    """Track events that reached the billing API, alone or in a batch request."""
    batched = sum(len(r.json()["events"]) for r in proxy.seen(TRACK + "-batch"))  # type: ignore[index]
    return len(proxy.seen(TRACK)) + batched


def settle(harness: AppHarness, client: RawClient) -> None:
    """Wait until the backend has taken every event this client sent and finished them: a
    sentinel event (a track refused before any request) is answered, the socket delivering in
    order, then nothing is queued or running any more."""
    marker = f"done_{uuid.uuid4().hex[:8]}"
    client.send(event_name(TrackUsageState.track), {"feature_key": marker})
    # answered at some point: tracks accepted before it may finish after it (their batch
    # leaves when the sends before it return), so the last key shown need not be the marker
    client.wait_for(
        lambda: f'"last_feature_key_rx_state_": "{marker}"' in json.dumps(client.received), 60
    )
    assert harness.app_instance is not None
    proc: Any = harness.app_instance.event_processor
    deadline = time.monotonic() + 60
    while proc._tasks or (proc._queue is not None and not proc._queue.empty()):
        assert time.monotonic() < deadline, "the backend never went idle"
        time.sleep(0.05)


def cached(prefix: str) -> int:
    from billing_ui.runtime import current

    return asyncio.run(current().store.size((prefix,)))  # the memory store awaits nothing


def test_a_flood_of_made_up_feature_checks_grows_nothing(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
) -> None:
    from billing_ui.states import FeatureEntitlementsState

    _, proxy = billing
    checks_before, cache_before = len(proxy.seen("/v1/usage/check")), cached("feature-check")
    flood = 2000
    with RawClient(backend_url(app)) as client:
        for i in range(flood):
            client.send(event_name(FeatureEntitlementsState.check), {"feature_key": f"made_up_{i}"})
        settle(app, client)
        checks = client.map_of(FeatureEntitlementsState, CHECKS)
        largest = client.largest_update()
    assert len(checks) == 0, "a made-up key entered the tab's state"
    assert cached("feature-check") == cache_before, "a made-up key entered the cache"
    assert len(proxy.seen("/v1/usage/check")) == checks_before, "a made-up key went upstream"
    assert largest < 4096, f"an update of {largest} bytes"


def test_a_flood_of_one_known_check_is_coalesced(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
) -> None:
    from billing_ui.states import FeatureEntitlementsState

    _, proxy = billing
    before = len(proxy.seen("/v1/usage/check"))
    with RawClient(backend_url(app)) as client:
        started = time.monotonic()
        for _ in range(500):
            client.send(event_name(FeatureEntitlementsState.check), {"feature_key": "api_calls"})
        settle(app, client)
        elapsed = time.monotonic() - started
        checks = client.map_of(FeatureEntitlementsState, CHECKS)
    assert list(checks.keys()) == ["api_calls"]
    # One key: coalesced per tab (one in flight, one more after it, 1 s apart) and cached.
    allowed = 2 + elapsed / 1.0
    assert len(proxy.seen("/v1/usage/check")) - before <= allowed


@pytest.mark.parametrize("query", ["metrics", "entitlements"])
def test_a_flood_of_refetches_makes_a_bounded_number_of_requests(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
    query: str,
) -> None:
    from billing_ui.states import FeatureEntitlementsState

    handler, path = {
        "metrics": (UsageMetricsState.refetch, "/v1/usage/metrics"),
        "entitlements": (FeatureEntitlementsState.refetch, "/v1/features/entitlements"),
    }[query]
    _, proxy = billing
    before = len(proxy.seen(path))
    with RawClient(backend_url(app)) as client:
        started = time.monotonic()
        for _ in range(500):
            client.send(event_name(handler), {})
        settle(app, client)
        elapsed = time.monotonic() - started
    made = len(proxy.seen(path)) - before
    # Coalesced per tab: one in flight and at most one more after it, 1 s apart.
    assert 1 <= made <= 2 + elapsed / 1.0, f"500 refetches made {made} requests in {elapsed:.1f}s"


def test_a_flood_of_unknown_histories_grows_nothing(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
) -> None:
    from billing_ui.states.history import UsageHistoryState

    _, proxy = billing
    before, cache_before = len(proxy.seen("/v1/usage/history")), cached("usage-history")
    with RawClient(backend_url(app)) as client:
        for i in range(3000):
            client.send(event_name(UsageHistoryState.refetch), {"history": f"nope_{i}"})
        for i in range(100):
            client.send(event_name(UsageHistoryState.load), {"history": f"nope_{i}"})
        settle(app, client)
        state = client.state_of(UsageHistoryState)
        histories = client.map_of(UsageHistoryState, HISTORIES)
        largest = client.largest_update()
    assert not state.get("errors") and not histories and not state.get("loading")
    assert len(proxy.seen("/v1/usage/history")) == before
    assert cached("usage-history") == cache_before
    assert largest < 4096, f"an update of {largest} bytes"


def test_a_flood_of_tracks_is_held_to_the_sessions_token_bucket(
    app: AppHarness,  # noqa: F811
    billing: tuple[RunningServer, FaultProxy],  # noqa: F811
) -> None:
    from billing_ui.settings import get_settings

    server, proxy = billing
    before_tracks, before_count = tracks_sent(proxy), consumed(server)
    settings = get_settings()
    with RawClient(backend_url(app)) as client:
        started = time.monotonic()
        for _ in range(300):
            client.send(event_name(TrackUsageState.track), {"feature_key": "api_calls"})
        settle(app, client)
        elapsed = time.monotonic() - started
        # The backend is idle, but its last delta (nothing pending) may still be on the wire.
        client.wait_for(lambda: not client.track_state().get("pending_features"), 10)
        state = client.track_state()
    sent = tracks_sent(proxy) - before_tracks
    allowed = settings.browser_burst + settings.browser_rate * elapsed + 1
    assert 0 < sent <= allowed, f"{sent} tracks reached the API in {elapsed:.1f}s"
    assert consumed(server) - before_count == sent, "every track sent counted once"
    # (What the refused tab is told is asserted deterministically in
    # tests/states/test_query_status.py; deltas sent under a flood may be merged.)
    assert sent < 300, "the bucket refused nothing"
    assert len(state.get("pending_features") or []) == 0
