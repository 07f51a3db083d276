"""billing_ui.asgi mounted in a real FastAPI app served by uvicorn on loopback, in front of the
real local billing server: the customer only from the resolver, the allowlist and TrackRules,
CSRF for cookie-authenticated posts, the error envelope, the outbox behind a track."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from billing_ui.asgi import billing_routes
from billing_ui.core import AsyncBillingClient, BillingClient, TrackRule
from billing_ui.core.problems import USER_MESSAGE
from billing_ui.core.tracker import AsyncUsageTracker, UsageTracker
from billing_ui.server.testing import RunningServer, create_customer, serve_asgi
from tests.faults import FaultProxy, close
from tests.outbox.helpers import billed, wait_until

TRACKABLE = {"api_calls": TrackRule(max_quantity=10)}


def signed_in(request: Request) -> str | None:
    """The test app's "auth": a cookie naming the user. (A real app reads its signed session.)"""
    return request.cookies.get("uid")


def make_app(
    base_url: str,
    tracker: AsyncUsageTracker | None = None,
    trackable: dict[str, TrackRule] = TRACKABLE,
) -> FastAPI:
    client = AsyncBillingClient(base_url=base_url, max_retries=0, timeout=2.0)
    app = FastAPI()
    app.mount(
        "/billing",
        billing_routes(
            resolve_customer=signed_in,
            trackable=trackable,
            client=lambda: client,
            tracker=tracker,
            refresh_interval=0,
        ),
    )
    return app


@pytest.fixture
def app_url(billing_server: RunningServer) -> Iterator[str]:
    with serve_asgi(make_app(billing_server.base_url), name="asgi-app") as url:
        yield url


def browser(app_url: str, customer: str | None) -> httpx.Client:
    """A client that behaves like the app's own page: its cookie, its Origin on posts."""
    cookies = {"uid": customer} if customer else {}
    return httpx.Client(base_url=app_url, cookies=cookies, headers={"Origin": app_url})


def envelope(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["statusCode"] == response.status_code
    error: dict[str, Any] = body["error"]
    return error


def test_track_then_read_the_signed_in_customers_usage(
    billing_server: RunningServer, app_url: str, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with browser(app_url, customer) as page:
        tracked = page.post("/billing/track", json={"feature_key": "api_calls", "quantity": 3})
        assert tracked.status_code == 200, tracked.text
        assert tracked.json()["status"] == "recorded"
        assert tracked.json()["result"]["usage"]["consumed_units"] == 3
        metrics = page.get("/billing/metrics", params={"feature_key": "api_calls"}).json()
        assert [(m["feature_key"], m["consumed"]) for m in metrics["metrics"]] == [("api_calls", 3)]
        keys = {e["feature_key"] for e in page.get("/billing/entitlements").json()["entitlements"]}
        assert "priority_support" in keys
        check = page.get("/billing/check", params={"feature_key": "priority_support"}).json()
        assert check["has_access"] is True
    assert billed(tmp_path / "billing.db", customer) == (1, 1)


def test_nobody_signed_in_gets_401_in_the_envelope(app_url: str) -> None:
    with browser(app_url, None) as page:
        for response in (
            page.get("/billing/metrics"),
            page.post("/billing/track", json={"feature_key": "api_calls"}),
        ):
            assert response.status_code == 401
            assert envelope(response)["code"] == "AUTH_UNAUTHORIZED"
            assert envelope(response)["message"] == "Sign in first: nobody is signed in."


def test_a_wrong_method_or_path_is_answered_in_the_envelope(app_url: str) -> None:
    """As BillingOS answers (a 404 for both, in its envelope), not the host app's own 405 or
    404 (FastAPI's ``{"detail": ...}``)."""
    with browser(app_url, "cus_x") as page:
        for method, path in [
            ("GET", "/billing/track"),
            ("DELETE", "/billing/metrics"),
            ("POST", "/billing/check"),
            ("PROPFIND", "/billing/entitlements"),
            ("GET", "/billing/nothing-here"),
        ]:
            response = page.request(method, path)
            assert response.status_code == 404, (method, path)
            assert envelope(response) == {
                "code": "RES_NOT_FOUND",
                "message": f"Cannot {method} {path}",
            }
        assert page.head("/billing/entitlements").status_code == 200  # HEAD with GET
        long = "/billing/" + "x" * 5000
        message = envelope(page.get(long))["message"]
        assert message == f"Cannot GET {long[:200]}"  # the browser's path, cut short


def test_a_websocket_to_the_router_is_closed_not_an_error(app_url: str) -> None:
    """The router serves HTTP only: a WebSocket to a path under it is closed (as Starlette's
    own default does), not an exception in the host app's log."""
    with socket.create_connection(("127.0.0.1", int(app_url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(
            b"GET /billing/track HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        sock.settimeout(10)
        status = sock.recv(4096).split(b"\r\n", 1)[0]
    assert status == b"HTTP/1.1 403 Forbidden", status  # uvicorn's answer to a closed handshake


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        ({"feature_key": "seats"}, "feature_key", "allowlist"),
        ({"quantity": 1}, "feature_key", "required"),
        ({"feature_key": "api_calls", "quantity": 11}, "quantity", "max"),
        ({"feature_key": "api_calls", "quantity": 1.5}, "quantity", "integer"),
        (
            {"feature_key": "api_calls", "customer_id": "someone_else"},
            "customer_id",
            "unknown_field",
        ),
        ({"feature_key": "api_calls", "metadata": {"x": "y" * 2000}}, "metadata", "max_bytes"),
    ],
)
def test_a_browsers_bad_track_is_refused_naming_field_and_rule(
    billing_server: RunningServer,
    app_url: str,
    tmp_path: Path,
    body: dict[str, Any],
    field: str,
    rule: str,
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with browser(app_url, customer) as page:
        response = page.post("/billing/track", json=body)
    assert response.status_code == 400
    error = envelope(response)
    assert error["code"] == "VAL_INVALID_INPUT"
    assert error["details"]["fieldErrors"][0] == {
        **error["details"]["fieldErrors"][0],
        "field": field,
        "rule": rule,
    }
    assert billed(tmp_path / "billing.db", customer) == (0, 0)


@pytest.mark.parametrize(
    ("content", "content_type", "rule"),
    [
        (
            b'{"feature_key":"api_calls","quantity":1,"quantity":10}',
            "application/json",
            "duplicate_key",
        ),
        (b'\xef\xbb\xbf{"feature_key":"api_calls"}', "application/json", "bom"),
        (b'{"feature_key":"api_calls"}', "application/json; charset=latin-1", "charset"),
        ('{"feature_key":"api_calls"}'.encode("utf-16"), "application/json", "utf8"),
        (
            b'{"feature_key":"api_calls","quantity":' + b"1" + b"0" * 400 + b"}",
            "application/json",
            "max",
        ),
    ],
    ids=["duplicate-key", "bom", "latin-1", "utf-16", "10**400"],
)
def test_a_body_two_parsers_could_read_differently_is_refused(
    billing_server: RunningServer,
    app_url: str,
    tmp_path: Path,
    content: bytes,
    content_type: str,
    rule: str,
) -> None:
    """The same strict reading as the local server (billing_ui.core.strict_json; issue 8)."""
    customer = create_customer(billing_server, ["pro"])
    with browser(app_url, customer) as page:
        response = page.post(
            "/billing/track", content=content, headers={"Content-Type": content_type}
        )
    assert response.status_code == 400, response.text
    assert envelope(response)["details"]["fieldErrors"][0]["rule"] == rule
    assert billed(tmp_path / "billing.db", customer) == (0, 0)


def test_cookie_posts_from_another_site_are_refused(
    billing_server: RunningServer, app_url: str, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    with httpx.Client(base_url=app_url, cookies={"uid": customer}) as attacker:
        cross = attacker.post(
            "/billing/track",
            json={"feature_key": "api_calls"},
            headers={"Origin": "https://evil.example"},
        )
        no_origin = attacker.post("/billing/track", json={"feature_key": "api_calls"})
        same_site = attacker.post(
            "/billing/track",
            json={"feature_key": "api_calls"},
            headers={"Sec-Fetch-Site": "same-origin"},
        )
    assert (cross.status_code, no_origin.status_code) == (403, 403)
    assert envelope(cross)["code"] == "AUTH_CSRF_REJECTED"
    assert same_site.status_code == 200
    assert billed(tmp_path / "billing.db", customer) == (1, 1)


def test_setup_problems_reach_the_browser_only_as_a_neutral_sentence(
    billing_server: RunningServer, tmp_path: Path
) -> None:
    customer = create_customer(billing_server, ["pro"])
    wrong_key = FastAPI()
    bad_client = AsyncBillingClient(
        base_url=billing_server.base_url, api_key="sk_test_not_the_key", max_retries=0
    )
    wrong_key.mount(
        "/billing",
        billing_routes(resolve_customer=signed_in, trackable=TRACKABLE, client=lambda: bad_client),
    )
    with serve_asgi(wrong_key, name="asgi-app") as url, browser(url, customer) as page:
        response = page.post("/billing/track", json={"feature_key": "api_calls"})
    assert response.status_code == 503
    error = envelope(response)
    assert (
        error["message"] == "Billing is temporarily unavailable. Please try again in a few minutes."
    )
    assert "sk_test" not in response.text


def test_with_a_tracker_a_track_is_queued_while_the_api_is_down_and_sent_when_back(
    billing_server: RunningServer, tmp_path: Path
) -> None:
    """API up: recorded at once (200). API down: each track is kept in the outbox and answered
    202 with the number waiting; seats fail closed (503, nothing queued). Back: the worker
    delivers, and the database holds every track exactly once."""
    customer = create_customer(billing_server, ["pro"])
    trackable = {**TRACKABLE, "seats": TrackRule(max_quantity=1)}
    with FaultProxy(billing_server.base_url) as proxy:
        sync = UsageTracker(
            BillingClient(base_url=proxy.url, max_retries=0, timeout=2.0),
            outbox_path=tmp_path / "outbox.db",
            flush_interval=0.1,
        )
        tracker = AsyncUsageTracker(sync)
        with (
            serve_asgi(make_app(billing_server.base_url, tracker, trackable), name="asgi") as url,
            browser(url, customer) as page,
        ):
            up = page.post("/billing/track", json={"feature_key": "api_calls"})
            assert (up.status_code, up.json()["status"]) == (200, "recorded")
            proxy.on("/v1/usage/track", *[close()] * 10_000)  # down
            proxy.on("/v1/usage/track-batch", *[close()] * 10_000)
            answers = [
                page.post("/billing/track", json={"feature_key": "api_calls"}) for _ in range(3)
            ]
            assert [a.status_code for a in answers] == [202, 202, 202]
            assert [a.json()["queued"] for a in answers] == [1, 2, 3]
            seat = page.post("/billing/track", json={"feature_key": "seats"})
            assert (seat.status_code, envelope(seat)["message"]) == (503, USER_MESSAGE)
            assert sync.stats().depth == 3
            proxy.clear()  # back
            wait_until(lambda: sync.stats().depth == 0, timeout=30, what="the outbox drains")
        sync.shutdown()
        sync.client.close()
    assert billed(tmp_path / "billing.db", customer) == (4, 4)
