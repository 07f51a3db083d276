"""Retries against real failures, with the real server's database as the judge.

The faults — a 503 or 429 from something in front of the server, a response lost after the
server committed the write, a connection closed or hung mid-request — are injected by
``tests/faults.py``, a real TCP proxy on 127.0.0.1 in front of the real server. A fault injector
is needed because the real server cannot produce these faults on demand; it never answers a
request successfully on the server's behalf. Every test checks three things: how many attempts
reached the proxy, that each attempt carried the same idempotency key (header and body), and
the exact count of events the server recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from faults import FaultProxy, close, drop_response, free_port, keys, respond, stall

from billing_ui.core import (
    APIConnectionError,
    APITimeoutError,
    ConflictError,
    InternalServerError,
    QuotaExceededError,
    RateLimitError,
)
from billing_ui.core.errors import APIStatusError
from billing_ui.server.options import WireOptions
from billing_ui.server.testing import RunningServer, create_customer, running_server

from .conftest import Api, MakeApi

TRACK = "/v1/usage/track"
BATCH = "/v1/usage/track-batch"
NewCustomer = Callable[..., str]


def assert_one_key(proxy: FaultProxy, path: str, expected: str | None = None) -> str:
    """Every attempt carried the same key, in the header and in the body."""
    seen = proxy.seen(path)
    header_keys = set(keys(seen))
    body_keys = {r.json()["idempotency_key"] for r in seen}  # type: ignore[index]
    assert len(header_keys) == 1 and header_keys == body_keys, (header_keys, body_keys)
    key = header_keys.pop()
    assert key is not None
    if expected is not None:
        assert key == expected
    return key


async def track(api: Api, cid: str, **extra: object) -> object:
    return await api.track_usage(customer_id=cid, feature_key="api_calls", quantity=1, **extra)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_transient_statuses_are_retried_with_the_same_key(
    status: int, proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(TRACK, respond(status), respond(status))
    result = await proxied.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
    assert [r.action for r in proxy.seen(TRACK)] == ["respond", "respond", "forward"]
    assert assert_one_key(proxy, TRACK) == result.idempotency_key
    assert server.count_events(cid) == 1
    assert not result.duplicate


async def test_retries_run_out_and_the_last_error_is_raised(
    make_api: MakeApi, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    api = make_api(proxy.url, max_retries=2)
    cid = customer("pro")
    proxy.on(TRACK, respond(503), respond(503), respond(503))
    with pytest.raises(InternalServerError) as err:
        await track(api, cid)
    assert err.value.status_code == 503
    assert len(proxy.seen(TRACK)) == 3  # 1 + max_retries
    assert_one_key(proxy, TRACK)
    assert server.count_events(cid) == 0


async def test_max_retries_zero_makes_one_attempt(
    make_api: MakeApi, proxy: FaultProxy, customer: NewCustomer
) -> None:
    api = make_api(proxy.url, max_retries=0)
    proxy.on(TRACK, respond(503))
    with pytest.raises(InternalServerError):
        await track(api, customer("pro"))
    assert len(proxy.seen(TRACK)) == 1


async def test_retry_after_is_waited_for(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(TRACK, respond(429, {"Retry-After": "1"}))
    started = time.monotonic()
    await track(proxied, cid)
    elapsed = time.monotonic() - started
    # The client's own backoff is 10-50 ms in these tests: a full second is the server's ask.
    assert elapsed >= 0.95
    assert [r.action for r in proxy.seen(TRACK)] == ["respond", "forward"]
    assert_one_key(proxy, TRACK)
    assert server.count_events(cid) == 1


async def test_retry_after_beyond_the_cap_is_raised_at_once(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(TRACK, respond(429, {"Retry-After": "3600"}))
    started = time.monotonic()
    with pytest.raises(RateLimitError) as err:
        await track(proxied, cid)
    assert time.monotonic() - started < 5
    assert err.value.retry_after == 3600
    assert len(proxy.seen(TRACK)) == 1
    assert server.count_events(cid) == 0


async def test_dropped_response_is_retried_and_counted_once(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    """The server recorded the event, the response never arrived: the retry carries the same
    key, the server recognises it, and the event is counted once."""
    cid = customer("pro")
    proxy.on(TRACK, drop_response())
    result = await track(proxied, cid)
    assert [r.action for r in proxy.seen(TRACK)] == ["drop_response", "forward"]
    assert_one_key(proxy, TRACK, result.idempotency_key)  # type: ignore[attr-defined]
    assert server.count_events(cid) == 1
    assert result.usage.consumed_units == 1  # type: ignore[attr-defined]
    # The key was generated for this call, so the server's "duplicate" can only be our own
    # first attempt: for the caller this is the event's first and only recording.
    assert result.duplicate is False  # type: ignore[attr-defined]


async def test_dropped_response_with_the_callers_key_reports_what_the_server_said(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(TRACK, drop_response())
    result = await track(proxied, cid, idempotency_key="order-42")
    assert_one_key(proxy, TRACK, "order-42")
    assert server.count_events(cid) == 1
    # A caller's key may have been used by an earlier call of the caller's: the flag is the
    # server's, unaltered.
    assert result.duplicate is True  # type: ignore[attr-defined]


async def test_connection_closed_before_the_server_saw_the_request(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(TRACK, close())
    result = await track(proxied, cid)
    assert [r.action for r in proxy.seen(TRACK)] == ["close", "forward"]
    assert_one_key(proxy, TRACK)
    assert server.count_events(cid) == 1
    assert result.duplicate is False  # type: ignore[attr-defined]


async def test_timeouts_are_retried_then_raised(
    make_api: MakeApi, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    api = make_api(proxy.url, timeout=0.2, max_retries=1)
    cid = customer("pro")
    proxy.on(TRACK, stall(), stall())
    with pytest.raises(APITimeoutError) as err:
        await track(api, cid)
    assert isinstance(err.value.__cause__, httpx.TimeoutException)
    assert [r.action for r in proxy.seen(TRACK)] == ["stall", "stall"]
    assert_one_key(proxy, TRACK)
    assert server.count_events(cid) == 0


async def test_connection_refused(make_api: MakeApi) -> None:
    api = make_api(f"http://127.0.0.1:{free_port()}", max_retries=1)
    with pytest.raises(APIConnectionError) as err:
        await api.health()
    assert not isinstance(err.value, APITimeoutError)
    assert isinstance(err.value.__cause__, httpx.ConnectError)
    assert "python -m billing_ui.server" in str(err.value)


async def test_client_errors_are_not_retried(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("free")
    await proxied.track_usage(customer_id=cid, feature_key="seats", quantity=3)
    with pytest.raises(QuotaExceededError):
        await proxied.track_usage(customer_id=cid, feature_key="seats", quantity=1)
    with pytest.raises(APIStatusError):
        await proxied.track_usage(customer_id="cus_nobody", feature_key="seats", quantity=1)
    assert len(proxy.seen(TRACK)) == 3  # one attempt each
    assert server.count_events(cid) == 1


async def test_batch_retried_after_a_dropped_response_counts_each_event_once(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer, server: RunningServer
) -> None:
    cid = customer("pro")
    proxy.on(BATCH, drop_response(), respond(503))
    events = [{"customer_id": cid, "feature_key": "api_calls", "quantity": q} for q in (1, 2, 3)]
    results = await proxied.track_usage_batch(events)
    attempts = proxy.seen(BATCH)
    assert [r.action for r in attempts] == ["drop_response", "respond", "forward"]
    assert attempts[0].body == attempts[1].body == attempts[2].body  # same events, same keys
    assert server.count_events(cid) == 3
    assert all(r.ok and r.result is not None and not r.result.duplicate for r in results)
    [metric] = await proxied.get_usage_metrics(customer_id=cid, feature_key="api_calls")
    assert metric.consumed == 6


async def test_reads_and_session_calls_are_retried_too(
    proxied: Api, proxy: FaultProxy, customer: NewCustomer
) -> None:
    cid = customer("pro")
    proxy.on("/v1/usage/metrics", respond(502))
    proxy.on("/v1/session-tokens", drop_response())
    proxy.on("/v1/features/entitlements", close())
    assert await proxied.get_usage_metrics(customer_id=cid)
    assert await proxied.get_entitlements(customer_id=cid)
    assert len(proxy.seen("/v1/usage/metrics")) == 2
    assert len(proxy.seen("/v1/session-tokens")) == 2
    assert len(proxy.seen("/v1/features/entitlements")) == 2


async def test_the_servers_own_rate_limiter(make_api: MakeApi, tmp_path: Path) -> None:
    """A real 429 from the server (3 tracks a minute per customer here): raised with its
    ``Retry-After`` when retries are off, nothing counted; the window reopens on the server's
    clock."""
    with running_server(db_path=tmp_path / "limited.db", rate_limit_per_minute=3) as srv:
        api = make_api(srv.base_url, max_retries=0)
        cid = create_customer(srv, ["pro"])
        for _ in range(3):
            await track(api, cid)
        with pytest.raises(RateLimitError) as err:
            await track(api, cid)
        assert err.value.retry_after is not None and 0 < err.value.retry_after <= 60
        assert err.value.response.headers["X-RateLimit-Remaining"] == "0"
        assert srv.count_events(cid) == 3
        srv.manual_clock.advance(61)
        await track(api, cid)
        assert srv.count_events(cid) == 4


async def test_a_key_reused_for_another_event_is_a_conflict_not_retried(
    make_api: MakeApi, tmp_path: Path
) -> None:
    """With the local server's --reject-reused-keys (BillingOS itself replays the first event)."""
    options = WireOptions(reject_reused_keys=True)
    with (
        running_server(db_path=tmp_path / "strict.db", options=options) as strict,
        FaultProxy(strict.base_url) as proxy,
    ):
        cid = create_customer(strict, ["pro"])
        proxied = make_api(proxy.url)
        await proxied.track_usage(
            customer_id=cid, feature_key="api_calls", quantity=1, idempotency_key="evt-9"
        )
        with pytest.raises(ConflictError) as err:
            await proxied.track_usage(
                customer_id=cid, feature_key="api_calls", quantity=2, idempotency_key="evt-9"
            )
        assert err.value.code == "IDEMPOTENCY_KEY_REUSED"
        assert len(proxy.seen(TRACK)) == 2  # the conflict was not retried
        assert strict.count_events(cid) == 1
