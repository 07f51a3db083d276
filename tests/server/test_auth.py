"""Credentials: the secret key, session tokens (valid, expired, revoked, forged), the wrong
kind of credential on each kind of endpoint, and isolation between customers."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from billing_ui.server import tokens
from billing_ui.server.clock import ManualClock
from billing_ui.server.testing import RunningServer, mint_session_token

from .conftest import T0, assert_error, metric, track

SECRET_ENDPOINTS = [
    ("POST", "/v1/session-tokens", {"externalUserId": "u1"}),
    ("DELETE", "/v1/session-tokens/tok_" + "0" * 32, None),
    ("POST", "/v1/usage/track", {"customer_id": "u1", "feature_key": "api_calls", "quantity": 1}),
    ("POST", "/v1/usage/track-batch", {"events": []}),
    ("GET", "/v1/usage/check?customer_id=u1&feature_key=api_calls", None),
    ("GET", "/v1/usage/metrics?customer_id=u1", None),
    ("GET", "/v1/usage/history?customer_id=u1&feature_key=api_calls", None),
    ("PUT", "/v1/customers/u1", {"products": ["pro"]}),
]
SESSION_ENDPOINTS = [
    ("POST", "/v1/features/track-usage", {"feature_key": "api_calls", "quantity": 1}),
    ("GET", "/v1/features/usage-metrics", None),
    ("GET", "/v1/features/entitlements", None),
    ("GET", "/v1/features/check?feature_key=api_calls", None),
]


def _call(server: RunningServer, method: str, path: str, body: object, headers: dict[str, str]):
    return httpx.request(method, server.base_url + path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), SECRET_ENDPOINTS + SESSION_ENDPOINTS)
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}],
    ids=["none", "basic", "empty-bearer"],
)
def test_missing_or_malformed_credentials_are_401(server, method, path, body, headers):
    before = server.fingerprint()
    error = assert_error(_call(server, method, path, body, headers), 401, "AUTH_INVALID_TOKEN")
    assert "Bearer" in error["message"]
    assert server.fingerprint() == before


@pytest.mark.parametrize(("method", "path", "body"), SECRET_ENDPOINTS)
def test_secret_endpoints_refuse_a_wrong_key_and_a_session_token(
    server, customer, method, path, body
):
    cid = customer("pro")
    response = _call(server, method, path, body, server.auth("sk_test_wrong"))
    assert assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"] == "Invalid API key"
    assert response.headers["www-authenticate"] == "Bearer"
    token = mint_session_token(server, cid)
    response = _call(server, method, path, body, server.auth(token))
    assert "secret key" in assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"]


@pytest.mark.parametrize(("method", "path", "body"), SESSION_ENDPOINTS)
def test_session_endpoints_refuse_the_secret_key(server, method, path, body):
    response = _call(server, method, path, body, server.auth())
    assert "session token" in assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"]


def test_minted_token_has_the_billingos_format(server, api):
    response = api.post(
        "/v1/session-tokens",
        json={
            "externalUserId": "user_42",
            "externalOrganizationId": "org_1",
            "allowedOperations": ["track_usage"],
            "expiresIn": 600,
            "metadata": {"a": 1},
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    token = body["sessionToken"]
    assert token.startswith("bos_session_test_")
    head, sig = token.rsplit(".", 1)
    assert len(sig) == 64 and sig == sig.lower()
    payload = json.loads(base64.urlsafe_b64decode(head[len("bos_session_test_") :] + "=="))
    assert payload["external_user_id"] == "user_42"
    assert payload["external_organization_id"] == "org_1"
    assert payload["allowed_operations"] == ["track_usage"]
    assert payload["metadata"] == {"a": 1}
    assert tokens.JTI_PATTERN.fullmatch(payload["jti"])
    assert payload["exp"] - payload["iat"] == 600
    assert payload["iat"] == int(T0.timestamp())
    assert body["expiresAt"] == "2026-03-15T12:10:00Z"


def test_live_key_mints_live_tokens(database):
    from billing_ui.server.testing import running_server

    with running_server(**database, api_key="sk_live_abc") as srv:
        token = mint_session_token(srv, "u1")
        assert token.startswith("bos_session_live_")


def test_valid_token_reads_its_own_customer(server, customer, session):
    cid = customer("free")
    client = session(cid)
    body = client.get("/v1/features/usage-metrics").json()
    assert body["customer_id"] == cid and body["external_user_id"] == cid
    assert {m["feature_key"] for m in body["metrics"]} >= {"api_calls", "seats"}


def test_token_expires_by_the_server_clock(server, customer, session, clock: ManualClock):
    client = session(customer("pro"), expires_in=60)
    assert client.get("/v1/features/entitlements").status_code == 200
    clock.advance(59)
    assert client.get("/v1/features/entitlements").status_code == 200
    clock.advance(1)
    response = client.get("/v1/features/entitlements")
    assert assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"] == "Token expired"


def test_revoked_token_is_refused(server, api, customer):
    cid = customer("pro")
    token = mint_session_token(server, cid)
    with server.client(token) as client:
        assert client.get("/v1/features/entitlements").status_code == 200
        assert client.get("/v1/features/usage-metrics").status_code == 200
        jti = _payload(token)["jti"]
        revoked = api.delete(f"/v1/session-tokens/{jti}")
        assert revoked.status_code == 200 and revoked.json() == {"success": True}
        assert api.delete(f"/v1/session-tokens/{jti}").status_code == 200  # idempotent
        response = client.get("/v1/features/entitlements")
        assert assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"] == (
            "Token not found or revoked"
        )
        # The metrics route checks revocation inside its one read: refused all the same, and
        # before its query is judged (a bad feature_key is still a 401, not a 400).
        for params in ({}, {"feature_key": "Not A Key!"}):
            response = client.get("/v1/features/usage-metrics", params=params)
            assert assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"] == (
                "Token not found or revoked"
            )
    other = mint_session_token(server, cid)  # other tokens of the customer still work
    assert (
        httpx.get(
            server.base_url + "/v1/features/entitlements", headers=server.auth(other)
        ).status_code
        == 200
    )


def _payload(token: str) -> dict:
    head = token.rsplit(".", 1)[0].removeprefix("bos_session_test_")
    return json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))


def _forge(payload: dict, key: str = "sk_test_billing_ui_local", prefix="bos_session_test_") -> str:
    head = prefix + base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return head + "." + tokens._sign(key, head)


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda good: good[:-1] + ("0" if good[-1] != "0" else "1"), id="flipped-sig"),
        pytest.param(lambda good: good.rsplit(".", 1)[0], id="no-signature"),
        pytest.param(
            lambda good: _forge(
                {**_payload(good), "external_user_id": "victim"}, key="sk_test_other"
            ),
            id="signed-with-another-key",
        ),
        pytest.param(
            lambda good: good.split(".")[0][:-4] + "AAAA." + good.split(".")[1],
            id="tampered-payload",
        ),
        pytest.param(lambda good: good.replace("_test_", "_live_", 1), id="live-prefix"),
        pytest.param(lambda good: "bos_session_test_!!!." + "0" * 64, id="garbage"),
        pytest.param(lambda good: "not-a-token", id="not-a-token"),
        pytest.param(lambda good: _forge({"jti": "x"}), id="signed-bad-shape"),
        pytest.param(lambda good: _forge([1, 2]), id="signed-not-an-object"),
        pytest.param(
            lambda good: _forge({**_payload(good), "exp": "soon"}), id="signed-string-exp"
        ),
        pytest.param(
            lambda good: _forge({**_payload(good), "external_user_id": ""}), id="signed-empty-user"
        ),
    ],
)
def test_forged_or_malformed_tokens_are_refused(server, customer, make_token):
    good = mint_session_token(server, customer("pro"))
    response = httpx.get(
        server.base_url + "/v1/features/entitlements", headers=server.auth(make_token(good))
    )
    assert assert_error(response, 401, "AUTH_INVALID_TOKEN")["message"] == "Invalid token signature"


def test_a_token_only_sees_its_own_customer(server, api, customer, session):
    alice, bob = customer("free"), customer("enterprise")
    assert track(api, alice, "api_calls", 10).status_code == 200
    assert track(api, bob, "api_calls", 99).status_code == 200
    as_alice = session(alice)
    # Nothing in the request can point a token at another customer.
    response = as_alice.post(
        "/v1/features/track-usage",
        json={"feature_key": "api_calls", "quantity": 1, "customer_id": bob},
    )
    assert_error(response, 400, "VAL_INVALID_INPUT")
    response = as_alice.get("/v1/features/usage-metrics", params={"customer_id": bob})
    assert response.status_code == 200  # the unknown query parameter is ignored...
    assert response.json()["customer_id"] == alice  # ...and the token decides
    (calls,) = [m for m in response.json()["metrics"] if m["feature_key"] == "api_calls"]
    assert calls["consumed"] == 10
    assert (
        as_alice.post(
            "/v1/features/track-usage", json={"feature_key": "api_calls", "quantity": 5}
        ).status_code
        == 200
    )
    assert metric(api, alice, "api_calls")["consumed"] == 15
    assert metric(api, bob, "api_calls")["consumed"] == 99
    # The same idempotency key is independent per customer.
    as_bob = session(bob)
    for client in (as_alice, as_bob):
        r = client.post(
            "/v1/features/track-usage",
            json={"feature_key": "api_calls", "quantity": 1, "idempotency_key": "same"},
        )
        assert r.json()["duplicate"] is False
    # An SSO flag granted to bob only.
    assert (
        as_alice.get("/v1/features/check", params={"feature_key": "sso"}).json()["has_access"]
        is False
    )
    assert (
        as_bob.get("/v1/features/check", params={"feature_key": "sso"}).json()["has_access"] is True
    )


def test_revoke_rejects_a_malformed_jti(api):
    response = api.delete("/v1/session-tokens/not-a-jti")
    error = assert_error(response, 400, "VAL_INVALID_INPUT")
    assert error["details"]["fieldErrors"][0]["field"] == "jti"
