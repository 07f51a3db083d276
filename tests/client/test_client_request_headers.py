"""The headers a call sends, against a real local server.

The client merges its fixed headers with the httpx client's own defaults once per client
(``_headers_for``) instead of once per call. These tests pin that the request that leaves is the
one ``httpx.Client.build_request`` would have built: the httpx client's defaults, cookies and
query parameters included, and a change to the httpx client's headers after the first call
taken into account.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx

from billing_ui.core import BillingClient
from billing_ui.core import _constants as C
from billing_ui.server.testing import RunningServer


def _recording(seen: list[httpx.Request]) -> dict[str, list[Callable[[httpx.Request], None]]]:
    return {"request": [seen.append]}


def test_a_track_sends_the_httpx_clients_headers_merged_with_its_own(
    server: RunningServer, customer: Callable[..., str]
) -> None:
    cid = customer("enterprise")
    seen: list[httpx.Request] = []
    with httpx.Client(
        headers={"X-App": "one", "Accept": "text/plain"}, event_hooks=_recording(seen)
    ) as http:
        client = BillingClient(base_url=server.base_url, http_client=http)
        client.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
        first = seen[-1]
        assert first.headers["X-App"] == "one"
        assert first.headers["Accept"] == "application/json"  # the client's own wins, as before
        assert first.headers["Authorization"] == f"Bearer {server.api_key}"
        assert first.headers["Content-Type"] == "application/json"
        key = first.headers["Idempotency-Key"]
        assert uuid.UUID(key) and f'"idempotency_key":"{key}"'.encode() in first.content
        assert first.headers["User-Agent"].startswith("billing_ui-python/")
        assert first.headers[C.API_VERSION_HEADER] == C.API_VERSION
        names = [name for name, _ in first.headers.multi_items()]
        assert sorted(names) == sorted(set(names))  # every header once
        assert set(names) == {
            "host",
            "accept",
            "accept-encoding",
            "connection",
            "user-agent",
            "x-app",
            C.API_VERSION_HEADER.lower(),
            "authorization",
            "idempotency-key",
            "content-type",
            "content-length",
        }

        http.headers["X-App"] = "two"  # changed after the first call: the next one sees it
        client.track_usage(customer_id=cid, feature_key="api_calls", quantity=1)
        assert seen[-1].headers["X-App"] == "two"
        assert seen[-1].headers["Idempotency-Key"] != key
        assert len(seen[-1].headers.get_list("Authorization")) == 1


def test_the_httpx_clients_cookies_and_params_still_go_with_each_call(
    server: RunningServer, customer: Callable[..., str]
) -> None:
    cid = customer("enterprise")
    seen: list[httpx.Request] = []
    with httpx.Client(
        cookies={"route": "a"}, params={"trace": "1"}, event_hooks=_recording(seen)
    ) as http:
        client = BillingClient(base_url=server.base_url, http_client=http)
        metrics = client.get_usage_metrics(customer_id=cid)
        assert metrics
        sent = seen[-1]
        assert sent.headers["Cookie"] == "route=a"
        assert sent.url.params["trace"] == "1"
        assert sent.url.params["customer_id"] == cid
