"""The per-customer rate limit on tracking: headers, a real 429, the window on the server's
clock, batches, and that a refused request records nothing."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.ratelimit import RateLimiter
from billing_ui.server.testing import create_customer, mint_session_token, running_server

from .conftest import T0, assert_error, track


@pytest.fixture
def limited(database):
    clock = ManualClock(T0)
    with running_server(**database, clock=clock, rate_limit_per_minute=3) as srv:
        yield srv, clock


def test_429_after_the_limit_with_headers(limited):
    srv, clock = limited
    cid, other = create_customer(srv), create_customer(srv)
    with srv.client() as api:
        remaining = []
        for _ in range(3):
            r = track(api, cid, "api_calls", 1)
            assert r.status_code == 200
            assert r.headers["x-ratelimit-limit"] == "3"
            remaining.append(r.headers["x-ratelimit-remaining"])
        assert remaining == ["2", "1", "0"]
        before = srv.fingerprint()
        r = track(api, cid, "api_calls", 1)
        error = assert_error(r, 429, "RATE_LIMIT_EXCEEDED")
        assert r.headers["retry-after"] == "60" and error["details"] == {"retryAfter": 60}
        assert r.headers["x-ratelimit-remaining"] == "0" and r.headers["x-ratelimit-reset"] == "60"
        assert srv.fingerprint() == before
        assert track(api, other, "api_calls", 1).status_code == 200  # per customer
        # The session endpoint shares the customer's budget.
        token = mint_session_token(srv, cid)
        r = httpx.post(
            srv.base_url + "/v1/features/track-usage",
            headers=srv.auth(token),
            json={"feature_key": "api_calls", "quantity": 1},
        )
        assert r.status_code == 429
        clock.advance(timedelta(seconds=45))
        r = track(api, cid, "api_calls", 1)
        assert r.status_code == 429 and r.headers["retry-after"] == "15"
        clock.advance(timedelta(seconds=15))
        assert track(api, cid, "api_calls", 1).status_code == 200
        # Reads are not limited.
        for _ in range(10):
            assert api.get("/v1/usage/metrics", params={"customer_id": cid}).status_code == 200


def test_batch_items_over_the_limit_fail_on_their_own(limited):
    srv, _ = limited
    cid = create_customer(srv)
    events = [
        {"customer_id": cid, "feature_key": "api_calls", "quantity": 1, "idempotency_key": f"k{i}"}
        for i in range(5)
    ]
    with srv.client() as api:
        results = api.post("/v1/usage/track-batch", json={"events": events}).json()["results"]
    assert [r["error"]["code"] if r["error"] else "ok" for r in results] == [
        "ok",
        "ok",
        "ok",
        "RATE_LIMIT_EXCEEDED",
        "RATE_LIMIT_EXCEEDED",
    ]
    assert srv.count_events(cid) == 3


def test_limiter_off_and_sweep():
    clock = ManualClock(T0)
    off = RateLimiter(0, clock)
    assert not off.enabled
    limiter = RateLimiter(1, clock)
    for i in range(10_005):  # more keys than the sweep threshold
        assert limiter.hit(f"k{i}").allowed
    clock.advance(61)
    assert limiter.hit("fresh").allowed and len(limiter._windows) == 1
    with pytest.raises(ValueError):
        RateLimiter(-1, clock)


@pytest.mark.parametrize(("used", "count"), [(0, 2), (0, 5), (2, 3), (5, 1), (5, 0)])
def test_counting_a_batch_at_once_is_counting_its_events_one_by_one(used, count):
    """``hit_up_to`` (a batch's events of one customer, counted in one call) grants and
    answers exactly as ``count`` single hits in a row would."""
    at_once, one_by_one = RateLimiter(5, ManualClock(T0)), RateLimiter(5, ManualClock(T0))
    for limiter in (at_once, one_by_one):
        for _ in range(used):
            limiter.hit("c")
    granted, decision = at_once.hit_up_to("c", count)
    singles = [one_by_one.hit("c") for _ in range(count)]
    assert granted == sum(d.allowed for d in singles)
    if singles:
        assert decision.headers() == singles[-1].headers()
    assert at_once.hit("c") == one_by_one.hit("c")
