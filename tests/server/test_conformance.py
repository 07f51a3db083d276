"""The local server on the wire, row by row against BillingOS (docs/api.md, "Conformance with
BillingOS"): what BillingOS's public source sends, the local server sends, so a client written
for BillingOS cannot tell them apart. Each test names its row; every row's test failed on the
code before this module existed (see the commit that added it).

Real server, real loopback HTTP, real SQLite; the expected bodies are BillingOS's, spelled out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.testing import (
    RunningServer,
    create_customer,
    mint_session_token,
    running_server,
)

from .conftest import T0, assert_error, track

DEV_ORIGIN = "http://localhost:5173"


def _preflight(server: RunningServer, origin: str, path: str = "/v1/features/track-usage"):
    return httpx.options(
        server.base_url + path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


# --- row: CORS ----------------------------------------------------------------------------
def test_cors_preflight_and_answer_on_loopback(server, customer):
    preflight = _preflight(server, DEV_ORIGIN)
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == DEV_ORIGIN
    allowed = {
        h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
    }
    assert allowed >= {"content-type", "authorization", "x-requested-with"}
    assert "POST" in preflight.headers["access-control-allow-methods"]
    cid = customer("free")
    token = mint_session_token(server, cid)
    answer = httpx.get(
        server.base_url + "/v1/features/usage-metrics",
        headers={"Origin": DEV_ORIGIN, "Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == DEV_ORIGIN
    # An error answer is readable by the page too (the envelope says what went wrong).
    refused = httpx.get(
        server.base_url + "/v1/features/entitlements", headers={"Origin": DEV_ORIGIN}
    )
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == DEV_ORIGIN


def test_cors_origins_come_from_the_flag_and_default_to_none_off_loopback(tmp_path: Path):
    from billing_ui.server.options import CorsPolicy

    assert not CorsPolicy.for_host("0.0.0.0", environ={}).enabled
    assert CorsPolicy.for_host("127.0.0.1", environ={}).loopback
    assert CorsPolicy.for_host("::1", environ={}).loopback
    policy = CorsPolicy.for_host(
        "0.0.0.0", environ={"BILLING_UI_CORS_ORIGINS": "https://app.example.com"}
    )
    assert policy.origins == ("https://app.example.com",) and not policy.loopback
    assert not CorsPolicy.for_host("127.0.0.1", "none", environ={}).enabled
    with pytest.raises(ValueError, match="http"):
        CorsPolicy.parse("app.example.com")
    with running_server(db_path=tmp_path / "b.db", cors=policy) as srv:
        assert (
            _preflight(srv, "https://app.example.com").headers["access-control-allow-origin"]
            == "https://app.example.com"
        )
        assert "access-control-allow-origin" not in _preflight(srv, DEV_ORIGIN).headers
    with running_server(db_path=tmp_path / "c.db", cors=CorsPolicy()) as srv:
        closed = _preflight(srv, DEV_ORIGIN)
        assert "access-control-allow-origin" not in closed.headers


# --- row: validation errors ---------------------------------------------------------------
def test_validation_errors_are_400_val_invalid_input(api, customer):
    error = assert_error(track(api, customer("free"), "api_calls", 0), 400, "VAL_INVALID_INPUT")
    assert [e["field"] for e in error["details"]["fieldErrors"]] == ["quantity"]
    error = assert_error(
        api.get("/v1/usage/metrics", params={"customer_id": ""}), 400, "VAL_INVALID_INPUT"
    )
    assert error["details"]["fieldErrors"][0]["field"] == "customer_id"


# --- row: unknown customer ----------------------------------------------------------------
def test_unknown_customer_on_session_endpoints_is_empty_not_an_error(server, session):
    client = session("not_created_yet")
    metrics = client.get("/v1/features/usage-metrics")
    assert (metrics.status_code, metrics.json()) == (200, {"metrics": []})
    ents = client.get("/v1/features/entitlements")
    assert (ents.status_code, ents.json()) == (200, {"entitlements": []})
    check = client.get("/v1/features/check", params={"feature_key": "api_calls"})
    assert check.status_code == 200
    assert check.json() == {
        "feature_key": "api_calls",
        "has_access": False,
        "reason": "Customer not found",
    }
    tracked = client.post(
        "/v1/features/track-usage", json={"feature_key": "api_calls", "quantity": 1}
    )
    assert assert_error(tracked, 400, "VAL_INVALID_INPUT")["message"] == "Customer not found"


def test_unknown_customer_on_secret_key_endpoints_is_400_naming_it(api):
    for response in (
        api.get("/v1/usage/metrics", params={"customer_id": "ghost"}),
        api.get("/v1/usage/check", params={"customer_id": "ghost", "feature_key": "api_calls"}),
        track(api, "ghost", "api_calls", 1),
    ):
        assert assert_error(response, 400, "VAL_INVALID_INPUT")["message"] == (
            "Customer not found: ghost"
        )


# --- row: 400 refusals share BillingOS's one code ------------------------------------------
def test_refusals_are_400_val_invalid_input_with_billingos_messages(api, customer):
    cid = customer("free")
    assert track(api, cid, "seats", 3).status_code == 200
    error = assert_error(track(api, cid, "seats", 1), 400, "VAL_INVALID_INPUT")
    assert error["message"] == "quota_exceeded"
    error = assert_error(track(api, cid, "projects", 1), 400, "VAL_INVALID_INPUT")
    assert error["message"] == "Feature is not a usage quota type"
    error = assert_error(track(api, cid, "sso", 1), 404, "RES_NOT_FOUND")
    assert error["message"] == "No active subscription with this feature"


# --- row: unlimited shapes ----------------------------------------------------------------
def test_unlimited_is_sent_as_billingos_sends_it_on_each_endpoint(api, customer, session):
    cid = customer("enterprise")
    usage = track(api, cid, "api_calls", 7).json()["usage"]
    assert "unlimited" not in usage
    assert (usage["limit_units"], usage["remaining_units"]) == (None, None)
    (metric,) = api.get(
        "/v1/usage/metrics", params={"customer_id": cid, "feature_key": "api_calls"}
    ).json()["metrics"]
    assert "unlimited" not in metric
    assert (metric["limit"], metric["remaining"], metric["percentage_used"]) == (0, 0, 0)
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "api_calls"})
    body = check.json()
    assert (body["has_access"], body["limit"], body["usage"]) == (True, 0, 7)
    assert body["metadata"]["remaining"] == 0 and body["metadata"]["type"] == "usage_quota"
    as_cid = session(cid)
    assert as_cid.get("/v1/features/check", params={"feature_key": "api_calls"}).json() == body


# --- row: a quota that never resets -------------------------------------------------------
def test_a_never_resetting_quota_has_no_end(api, customer):
    cid = customer("pro")
    usage = track(api, cid, "seats", 2).json()["usage"]
    assert usage["period_end"] is None
    (metric,) = api.get(
        "/v1/usage/metrics", params={"customer_id": cid, "feature_key": "seats"}
    ).json()["metrics"]
    assert (metric["period_end"], metric["resets_in_days"]) == (None, None)
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "seats"}).json()
    assert "resets_at" not in check["metadata"]


# --- row: percentage_used -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("feature", "quantity", "percent"),
    [("seats", 1, 33), ("seats", 2, 67), ("api_calls", 5, 1), ("api_calls", 4, 0)],
)
def test_percentage_used_is_rounded_to_a_whole_number(api, customer, feature, quantity, percent):
    cid = customer("free")  # seats: 3, api_calls: 1000 (5 -> 0.5 % -> 1, as Math.round)
    assert track(api, cid, feature, quantity).status_code == 200
    (metric,) = api.get(
        "/v1/usage/metrics", params={"customer_id": cid, "feature_key": feature}
    ).json()["metrics"]
    assert metric["percentage_used"] == percent


# --- row: check shapes --------------------------------------------------------------------
def test_check_shapes_follow_billingos(api, customer):
    cid = customer("pro")
    flag = api.get(
        "/v1/usage/check", params={"customer_id": cid, "feature_key": "priority_support"}
    )
    assert flag.json() == {
        "feature_key": "priority_support",
        "has_access": True,
        "reason": None,
        "limit": None,
        "usage": None,
        "metadata": {"type": "boolean_flag"},
    }
    lapsed = customer("pro", status="canceled")
    body = api.get(
        "/v1/usage/check", params={"customer_id": lapsed, "feature_key": "api_calls"}
    ).json()
    assert body == {
        "feature_key": "api_calls",
        "has_access": False,
        "reason": "subscription_not_active",
        "limit": None,
        "usage": None,
        "metadata": None,
    }


# --- row: secret-key metrics envelope -----------------------------------------------------
def test_secret_key_metrics_answer_metrics_and_customer_id_only(api, customer):
    cid = customer("free")
    body = api.get("/v1/usage/metrics", params={"customer_id": cid}).json()
    assert set(body) == {"metrics", "customer_id"} and body["customer_id"] == cid


# --- row: unknown route or method ---------------------------------------------------------
def test_a_wrong_method_is_a_404_as_express_answers(api):
    error = assert_error(api.get("/v1/usage/track"), 404, "RES_NOT_FOUND")
    assert error["message"] == "Cannot GET /v1/usage/track"
    error = assert_error(api.get("/v1/nowhere"), 404, "RES_NOT_FOUND")
    assert error["message"] == "Cannot GET /v1/nowhere"


# --- row: an idempotency key reused for another event ------------------------------------
def test_a_reused_key_replays_the_first_event_by_default(api, customer):
    cid = customer("free")
    first = track(api, cid, "api_calls", 1, idempotency_key="k1").json()
    again = track(api, cid, "api_calls", 2, idempotency_key="k1")
    assert again.status_code == 200
    body = again.json()
    assert (body["quantity"], body["recorded_at"], body["duplicate"]) == (
        1,
        first["recorded_at"],
        True,
    )
    other = track(api, cid, "storage_gb", 1, idempotency_key="k1").json()
    assert (other["feature_key"], other["usage"]) == ("api_calls", None)
    metrics = api.get("/v1/usage/metrics", params={"customer_id": cid}).json()["metrics"]
    consumed = {m["feature_key"]: m["consumed"] for m in metrics}
    assert (consumed["api_calls"], consumed["storage_gb"]) == (1, 0)


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[RunningServer]:
    from billing_ui.server.options import WireOptions

    options = WireOptions(reject_reused_keys=True, strict_feature_filter=True)
    with running_server(db_path=tmp_path / "s.db", clock=ManualClock(T0), options=options) as s:
        yield s


def test_the_strict_flags_refuse_a_reused_key_and_filter_strictly(strict):
    cid = create_customer(strict, ["free"])
    with strict.client() as api:
        assert track(api, cid, "api_calls", 1, idempotency_key="k1").status_code == 200
        assert_error(
            track(api, cid, "api_calls", 2, idempotency_key="k1"), 409, "IDEMPOTENCY_KEY_REUSED"
        )
        response = api.get("/v1/usage/metrics", params={"customer_id": cid, "feature_key": "nope"})
        assert response.json()["metrics"] == []


# --- row: the metrics filter --------------------------------------------------------------
def test_an_unknown_feature_filter_is_skipped_by_default(api, customer):
    cid = customer("free")
    every = api.get("/v1/usage/metrics", params={"customer_id": cid}).json()["metrics"]
    unknown = api.get(
        "/v1/usage/metrics", params={"customer_id": cid, "feature_key": "no_such_feature"}
    ).json()["metrics"]
    assert len(every) == 5 and unknown == every
