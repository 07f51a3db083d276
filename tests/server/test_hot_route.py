"""``POST /v1/usage/track``, ``POST /v1/usage/track-batch`` and the two metrics reads skip
FastAPI's routing
(``server/hot_route.py``); a query parameter the route does not read sends the same request
down the full stack. Both ways must answer alike: the same status, body (but for the request
id and timestamp of an error), and header names, for a success, a replay and each kind of
refusal. Each test also asserts which way served each request (``HotRoute``'s in-process
count): were the hot route never taken, both ways would be the full stack and answer alike."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from billing_ui.core._constants import LOCAL_SECRET_KEY
from billing_ui.server.testing import mint_session_token

PATH = "/v1/usage/track"


def _served(server: Any, path: str) -> int:
    """Requests to ``path`` the hot route has served in the server's process so far."""
    count: int = server.app.state.hot_route_served[path]
    return count


def _assert_ways(server: Any, path: str, send: Any) -> list[httpx.Response]:
    """``send("hot")`` then ``send("full")``; the hot route served the first, not the second."""
    responses = []
    for way in ("hot", "full"):
        before = _served(server, path)
        responses.append(send(way))
        taken = _served(server, path) - before
        assert taken == (1 if way == "hot" else 0), f"{way} request: hot route served {taken}"
    return responses


def _comparable(response: httpx.Response) -> tuple[int, Any, list[str]]:
    body = response.json()
    if "error" in body:  # unique per request
        body["error"].pop("requestId")
        body["error"].pop("timestamp")
    names = sorted(k for k in response.headers if k not in ("date", "content-length"))
    return response.status_code, body, names


@pytest.mark.parametrize(
    ("case", "body", "headers"),
    [
        ("recorded", {"feature_key": "api_calls", "quantity": 1, "idempotency_key": "k-{way}"}, {}),
        ("replayed", {"feature_key": "api_calls", "quantity": 1, "idempotency_key": "same"}, {}),
        ("unknown customer", {"customer_id": "nobody", "feature_key": "api_calls"}, {}),
        ("bad quantity", {"feature_key": "api_calls", "quantity": -1}, {}),
        ("no credential", {"feature_key": "api_calls"}, {"authorization": ""}),
        ("session token", {"feature_key": "api_calls"}, {"authorization": "Bearer bos_session_x"}),
        ("key mismatch", {"feature_key": "api_calls", "idempotency_key": "a"},
         {"idempotency-key": "b"}),
    ],
)  # fmt: skip
def test_the_hot_route_answers_as_the_full_stack(server, customer, case, body, headers):
    cid = customer("pro")

    def send(way: str) -> httpx.Response:
        sent = {"customer_id": cid, **body}
        if "idempotency_key" in sent:
            sent["idempotency_key"] = sent["idempotency_key"].format(way=way)
        auth = {"authorization": f"Bearer {LOCAL_SECRET_KEY}", **headers}
        url = PATH if way == "hot" else f"{PATH}?via=full"
        return httpx.post(f"{server.base_url}{url}", json=sent, headers=auth)

    hot, full = (_comparable(r) for r in _assert_ways(server, PATH, send))
    if case == "replayed":
        assert hot[1]["duplicate"] is False and full[1]["duplicate"] is True
        full[1]["duplicate"] = False
    if case == "recorded":
        assert hot[1]["usage"]["consumed_units"] + 1 == full[1]["usage"]["consumed_units"]
        assert (hot[1]["idempotency_key"], full[1]["idempotency_key"]) == ("k-hot", "k-full")
        full[1]["usage"], full[1]["idempotency_key"] = hot[1]["usage"], "k-hot"
    assert hot[0] == full[0] and hot[0] == (200 if case in ("recorded", "replayed") else hot[0])
    assert hot == full
    assert "x-request-id" in hot[2]


def test_a_hot_route_track_is_measured_as_the_route(server, customer, api):
    """A plain track is named ``track_usage`` in the metrics either way (the log record's
    operation), so the hot route cannot drop out of the server's observability."""
    cid = customer("pro")
    before = _served(server, PATH)
    api.post(
        PATH, json={"customer_id": cid, "feature_key": "api_calls", "quantity": 1}
    ).raise_for_status()
    assert _served(server, PATH) == before + 1, "served by the hot route"
    text = api.get("/metrics").text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("billing_server_request_seconds_count")
        and 'operation="track_usage"' in line
        and 'outcome="2xx"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 1


@pytest.mark.parametrize(
    ("case", "params", "auth"),
    [
        ("all metrics", {}, "key"),
        ("one feature", {"feature_key": "api_calls"}, "key"),
        ("unknown feature", {"feature_key": "nope"}, "key"),
        ("bad feature key", {"feature_key": "a b"}, "key"),
        ("unknown customer", {"customer_id": "nobody"}, "key"),
        ("bad customer id", {"customer_id": ""}, "key"),
        ("no credential", {}, ""),
        ("session token", {}, "Bearer bos_session_x"),
    ],
)  # fmt: skip
def test_the_hot_metrics_read_answers_as_the_full_stack(server, customer, case, params, auth):
    cid = customer("pro")
    headers = {"authorization": f"Bearer {LOCAL_SECRET_KEY}" if auth == "key" else auth}

    def send(way: str) -> httpx.Response:
        return httpx.get(
            f"{server.base_url}/v1/usage/metrics",
            params={"customer_id": cid, **params, **({} if way == "hot" else {"via": "full"})},
            headers=headers,
        )

    hot, full = (_comparable(r) for r in _assert_ways(server, "/v1/usage/metrics", send))
    assert hot == full
    assert hot[0] == (200 if case in ("all metrics", "one feature", "unknown feature") else hot[0])
    assert "x-request-id" in hot[2]


@pytest.mark.parametrize(
    ("case", "params", "auth"),
    [
        ("all metrics", {}, "token"),
        ("one feature", {"feature_key": "api_calls"}, "token"),
        ("bad feature key", {"feature_key": "a b"}, "token"),
        ("unknown customer", {}, "stranger"),
        ("revoked token", {}, "revoked"),
        ("revoked token, bad feature key", {"feature_key": "a b"}, "revoked"),
        ("secret key", {}, "key"),
        ("forged token", {}, "forged"),
    ],
)  # fmt: skip
def test_the_hot_session_metrics_read_answers_as_the_full_stack(
    server, customer, api, case, params, auth
):
    cid = customer("pro")
    token = mint_session_token(server, "nobody-here" if auth == "stranger" else cid)
    if auth == "revoked":
        api.delete(f"/v1/session-tokens/{_jti(token)}").raise_for_status()
    forged = token[:-2] + ("11" if token.endswith("00") else "00")  # always differs from token
    credential = {"key": LOCAL_SECRET_KEY, "forged": forged}.get(auth, token)

    def send(way: str) -> httpx.Response:
        return httpx.get(
            f"{server.base_url}/v1/features/usage-metrics",
            params={**params, **({} if way == "hot" else {"via": "full"})},
            headers={"authorization": f"Bearer {credential}"},
        )

    path = "/v1/features/usage-metrics"
    hot, full = (_comparable(r) for r in _assert_ways(server, path, send))
    assert hot == full
    ok = case in ("all metrics", "one feature", "unknown customer")
    assert hot[0] == (200 if ok else hot[0]) and (ok or hot[0] >= 400)
    assert "x-request-id" in hot[2]


def _jti(token: str) -> str:
    payload = token.removeprefix("bos_session_test_").rsplit(".", 1)[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


@pytest.mark.parametrize("path", ["/v1/usage/metrics", "/v1/features/usage-metrics"])
def test_a_hot_metrics_read_is_measured_as_the_route(server, customer, api, path):
    """Named ``usage_metrics`` / ``session_usage_metrics`` in the metrics either way."""
    cid = customer("pro")
    token = mint_session_token(server, cid)
    headers = {"authorization": f"Bearer {token}"} if "features" in path else {}
    before = _served(server, path)
    api.get(path, params={"customer_id": cid} if not headers else {}, headers=headers)
    assert _served(server, path) == before + 1, "served by the hot route"
    operation = "session_usage_metrics" if headers else "usage_metrics"
    text = api.get("/metrics").text
    assert any(
        line.startswith("billing_server_request_seconds_count")
        and f'operation="{operation}"' in line
        and 'outcome="2xx"' in line
        and float(line.rsplit(" ", 1)[1]) >= 1
        for line in text.splitlines()
    )


BATCH_PATH = "/v1/usage/track-batch"


@pytest.mark.parametrize(
    ("case", "events", "headers"),
    [
        ("plain", [("me", "api_calls", 1, "a"), ("me", "ai_tokens", 2.5, "b")], {}),
        ("one refused", [("me", "api_calls", 1, "a"), ("nobody", "api_calls", 1, "b")], {}),
        ("no key", [("me", "api_calls", 1, None)], {}),
        ("bad quantity", [("me", "api_calls", -1, "a")], {}),
        ("not JSON", [("me", "api_calls", 1, "a")], {"content-type": "text/plain"}),
        ("no credential", [("me", "api_calls", 1, "a")], {"authorization": ""}),
        ("session token", [("me", "api_calls", 1, "a")],
         {"authorization": "Bearer bos_session_x"}),
    ],
)  # fmt: skip
def test_the_hot_batch_route_answers_as_the_full_stack(
    server, customer, api, case, events, headers
):
    """Each way sends the same events for a customer of its own (so the answers are equal
    whole, usage included), and a batch is still named ``track_usage_batch`` in the metrics."""

    def send(way: str) -> httpx.Response:
        cid = customer("pro")
        sent = [
            {"customer_id": cid if c == "me" else c, "feature_key": f, "quantity": q}
            | ({} if k is None else {"idempotency_key": k})
            for c, f, q, k in events
        ]
        auth = {"authorization": f"Bearer {LOCAL_SECRET_KEY}", **headers}
        url = BATCH_PATH if way == "hot" else f"{BATCH_PATH}?via=full"
        return httpx.post(f"{server.base_url}{url}", content=json.dumps({"events": sent}),
                          headers={"content-type": "application/json", **auth})  # fmt: skip

    hot, full = (_comparable(r) for r in _assert_ways(server, BATCH_PATH, send))
    assert hot == full
    assert hot[0] == 200 if case in ("plain", "one refused") else hot[0] >= 400
    assert "x-request-id" in hot[2]
    if hot[0] == 200:
        recorded = [r["error"] is None for r in hot[1]["results"]]
        assert recorded == [True, case == "plain"]
        text = api.get("/metrics").text
        assert any(  # both ways counted under the route's name
            line.startswith("billing_server_request_seconds_count")
            and 'operation="track_usage_batch"' in line
            and 'outcome="2xx"' in line
            and float(line.rsplit(" ", 1)[1]) >= 2
            for line in text.splitlines()
        )
