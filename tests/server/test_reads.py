"""Reading: usage metrics (and their filter), entitlements, feature checks, usage history."""

from __future__ import annotations

from datetime import timedelta

from billing_ui.core.models import (
    EntitlementsResponse,
    FeatureCheck,
    UsageMetricsResponse,
)

from .conftest import assert_error, metric, track


def test_metrics_parse_with_the_shared_models(api, customer, session):
    cid = customer("pro")
    track(api, cid, "api_calls", 10)
    backend = UsageMetricsResponse.model_validate_json(
        api.get("/v1/usage/metrics", params={"customer_id": cid}).content
    )
    browser = UsageMetricsResponse.model_validate_json(
        session(cid).get("/v1/features/usage-metrics").content
    )
    assert backend.metrics == browser.metrics
    assert [m.feature_key for m in backend.metrics] == [
        "api_calls",
        "ai_tokens",
        "report_exports",
        "storage_gb",
        "seats",
    ]  # fmt: skip  (catalogue order; only usage_quota features)
    calls = backend.metrics[0]
    assert (calls.consumed, calls.limit, calls.remaining, calls.percentage_used) == (
        10,
        50000,
        49990,
        0,
    )
    assert calls.product_name == "Pro" and calls.feature_title == "API calls"


def test_metrics_filter(api, customer, session):
    cid = customer("pro")
    for params in ({"customer_id": cid, "feature_key": "seats"},):
        body = api.get("/v1/usage/metrics", params=params).json()
        assert [m["feature_key"] for m in body["metrics"]] == ["seats"]
    client = session(cid)
    body = client.get("/v1/features/usage-metrics", params={"feature_key": "ai_tokens"}).json()
    assert [m["feature_key"] for m in body["metrics"]] == ["ai_tokens"]
    # A non-metered key filters everything out; an unknown one is skipped, as BillingOS does
    # (tests/server/test_conformance.py).
    for key in ("sso", "projects"):
        body = client.get("/v1/features/usage-metrics", params={"feature_key": key}).json()
        assert body["metrics"] == []


def test_metrics_only_for_active_subscriptions(api, customer):
    canceled = customer("pro", status="canceled")
    assert api.get("/v1/usage/metrics", params={"customer_id": canceled}).json()["metrics"] == []
    trialing = customer("pro", status="trialing")
    assert (
        len(api.get("/v1/usage/metrics", params={"customer_id": trialing}).json()["metrics"]) == 5
    )
    assert_error(
        api.get("/v1/usage/metrics", params={"customer_id": "ghost"}), 400, "VAL_INVALID_INPUT"
    )


def test_percentage_and_remaining(api, customer):
    cid = customer("free")
    track(api, cid, "api_calls", 333.333)
    m = metric(api, cid, "api_calls")
    assert m["percentage_used"] == 33 and m["remaining"] == 666.667
    track(api, cid, "api_calls", 1000)
    m = metric(api, cid, "api_calls")
    assert m["remaining"] == 0 and m["percentage_used"] == 133


def test_entitlements(api, customer, session):
    cid = customer("enterprise")
    body = EntitlementsResponse.model_validate_json(
        session(cid).get("/v1/features/entitlements").content
    )
    by_key = {e.feature_key: e for e in body.entitlements}
    assert list(by_key) == [
        "api_calls",
        "ai_tokens",
        "report_exports",
        "storage_gb",
        "seats",
        "projects",
        "priority_support",
        "sso",
    ]
    assert by_key["sso"].feature_type == "boolean_flag" and by_key["sso"].properties is None
    assert by_key["api_calls"].properties == {
        "limit": 0,
        "unlimited": True,
        "reset": "month",
        "hard_limit": False,
    }
    assert by_key["seats"].properties == {
        "limit": 500.0,
        "unlimited": False,
        "reset": "never",
        "hard_limit": True,
    }
    assert by_key["projects"].feature_type == "numeric_limit" and by_key["projects"].limit is None
    assert all(
        e.product_name == "Enterprise" and e.subscription_status == "active"
        for e in body.entitlements
    )
    assert by_key["sso"].granted_at is not None


def test_entitlements_of_several_products_take_the_most_generous(api, customer, session):
    cid = customer("free", "enterprise")
    ents = {
        e["feature_key"]: e
        for e in session(cid).get("/v1/features/entitlements").json()["entitlements"]
    }
    assert ents["api_calls"]["product_name"] == "Enterprise"  # unlimited beats 1,000
    assert ents["sso"]["product_name"] == "Enterprise"
    track(api, cid, "seats", 400)  # enterprise's 500 applies, not free's 3
    assert metric(api, cid, "seats")["limit"] == 500


def test_check_reasons(api, customer, session, server):
    free = customer("free")
    check = session(free).get("/v1/features/check", params={"feature_key": "sso"}).json()
    assert check == {
        "feature_key": "sso",
        "has_access": False,
        "reason": "no_active_subscription",
        "limit": None,
        "usage": None,
        "metadata": None,
    }
    canceled = customer("pro", status="canceled")
    check = session(canceled).get("/v1/features/check", params={"feature_key": "api_calls"}).json()
    assert check["has_access"] is False and check["reason"] == "subscription_not_active"
    check = FeatureCheck.model_validate(
        api.get("/v1/usage/check", params={"customer_id": free, "feature_key": "ai_tokens"}).json()
    )
    assert check.has_access and check.reason is None and check.limit == 10000 and check.usage == 0
    assert check.metadata is not None and check.metadata.remaining == 10000
    assert check.metadata.type == "usage_quota"
    assert (
        check.metadata.resets_at is not None
        and check.metadata.resets_at.isoformat() == "2026-03-16T00:00:00+00:00"
    )
    flag = api.get(
        "/v1/usage/check", params={"customer_id": free, "feature_key": "projects"}
    ).json()
    assert (
        flag["has_access"] is True
        and flag["limit"] == 5
        and flag["metadata"]["type"] == "numeric_limit"
    )
    unknown = api.get("/v1/usage/check", params={"customer_id": free, "feature_key": "nope"}).json()
    assert unknown["has_access"] is False and unknown["reason"] == "no_active_subscription"
    assert_error(
        api.get("/v1/usage/check", params={"customer_id": "ghost", "feature_key": "sso"}),
        400,
        "VAL_INVALID_INPUT",
    )


def test_history_buckets_and_cumulative(api, customer, clock):
    cid = customer("pro")
    start = clock.now()
    track(api, cid, "api_calls", 5)
    clock.advance(timedelta(hours=2))
    track(api, cid, "api_calls", 7)
    clock.advance(timedelta(days=1))
    track(api, cid, "api_calls", 1)
    body = api.get(
        "/v1/usage/history", params={"customer_id": cid, "feature_key": "api_calls"}
    ).json()
    assert body["bucket"] == "day" and body["period_start"] == "2026-03-01T00:00:00Z"
    points = body["points"]
    assert points[0]["at"] == "2026-03-01T00:00:00Z" and len(points) == 16  # 1st .. 16th
    assert points[13] == {"at": "2026-03-14T00:00:00Z", "quantity": 0.0, "cumulative": 0.0}
    assert points[14] == {"at": "2026-03-15T00:00:00Z", "quantity": 12.0, "cumulative": 12.0}
    assert points[15] == {"at": "2026-03-16T00:00:00Z", "quantity": 1.0, "cumulative": 13.0}
    hourly = api.get(
        "/v1/usage/history",
        params={"customer_id": cid, "feature_key": "api_calls", "bucket": "hour"},
    ).json()["points"]
    by_at = {p["at"]: p for p in hourly}
    assert by_at[start.strftime("%Y-%m-%dT%H:00:00Z")]["quantity"] == 5
    assert by_at["2026-03-15T14:00:00Z"] == {
        "at": "2026-03-15T14:00:00Z",
        "quantity": 7.0,
        "cumulative": 12.0,
    }
    assert hourly[-1]["cumulative"] == 13


def test_history_of_daily_and_never_features(api, customer, clock):
    cid = customer("pro")
    track(api, cid, "ai_tokens", 50)
    body = api.get(
        "/v1/usage/history", params={"customer_id": cid, "feature_key": "ai_tokens"}
    ).json()
    assert body["bucket"] == "hour" and len(body["points"]) == 13  # 00:00 .. 12:00
    track(api, cid, "seats", 2)
    clock.advance(timedelta(days=400))
    track(api, cid, "seats", 1)
    body = api.get("/v1/usage/history", params={"customer_id": cid, "feature_key": "seats"}).json()
    assert body["period_end"] is None  # never ends
    assert len(body["points"]) == 366  # capped window
    assert body["points"][0]["cumulative"] == 2  # earlier usage carried into the window
    assert body["points"][-1]["cumulative"] == 3


def test_history_errors(api, customer):
    cid = customer("pro")
    assert_error(
        api.get("/v1/usage/history", params={"customer_id": cid, "feature_key": "sso"}),
        400,
        "VAL_INVALID_INPUT",
    )
    assert_error(
        api.get("/v1/usage/history", params={"customer_id": cid, "feature_key": "zzz"}),
        404,
        "RES_NOT_FOUND",
    )
    assert_error(
        api.get("/v1/usage/history", params={"customer_id": "ghost", "feature_key": "seats"}),
        400,
        "VAL_INVALID_INPUT",
    )


def test_put_customer_creates_and_resubscribes(api, server):
    response = api.put("/v1/customers/acme", json={"products": ["free"]})
    assert response.status_code == 200
    assert response.json() == {"customer_id": "acme", "products": ["free"], "status": "active"}
    track(api, "acme", "api_calls", 3)
    response = api.put(
        "/v1/customers/acme", json={"products": ["pro", "enterprise"], "status": "trialing"}
    )
    assert response.json() == {
        "customer_id": "acme",
        "products": ["pro", "enterprise"],
        "status": "trialing",
    }
    assert metric(api, "acme", "api_calls")["consumed"] == 3  # usage survives a plan change
    assert api.put("/v1/customers/acme", json={"products": []}).json()["products"] == []
    error = assert_error(
        api.put("/v1/customers/acme", json={"products": ["gold", "pro", "pro"]}),
        400,
        "VAL_INVALID_INPUT",
    )
    assert [e["field"] for e in error["details"]["fieldErrors"]] == ["products.0", "products"]


def test_health_and_openapi(api, server):
    assert api.get("/health").json() == {"status": "ok", "database": "ok"}
    spec = api.get("/openapi.json").json()
    assert set(spec["paths"]) >= {
        "/v1/session-tokens",
        "/v1/session-tokens/{jti}",
        "/v1/usage/track",
        "/v1/usage/track-batch",
        "/v1/usage/check",
        "/v1/usage/metrics",
        "/v1/usage/history",
        "/v1/customers/{external_user_id}",
        "/v1/features/track-usage",
        "/v1/features/usage-metrics",
        "/v1/features/entitlements",
        "/v1/features/check",
        "/health",
    }
    body = spec["paths"]["/v1/usage/track"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"] == "#/components/schemas/TrackUsageRequest"
    assert "TrackUsageRequest" in spec["components"]["schemas"]
    assert "TrackUsageResult" in spec["components"]["schemas"]
    # The input rules are stated in the schema, and every error status is documented.
    track = spec["components"]["schemas"]["TrackUsageRequest"]["properties"]
    assert track["feature_key"]["pattern"] and track["quantity"]["exclusiveMinimum"] == 0
    responses = spec["paths"]["/v1/usage/track"]["post"]["responses"]
    assert set(responses) >= {"200", "400", "401", "404", "409", "429"}
    assert responses["400"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ErrorEnvelope"
    )


def test_every_response_has_a_request_id(api):
    ids = {api.get("/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5
    assert api.get("/nowhere").headers["x-request-id"].startswith("req_")


def test_failures_inside_the_server_keep_the_envelope(database):
    """A broken database: /health says 503, other routes a 500 envelope with the request id
    (logged on the server), never a traceback to the caller."""
    from billing_ui.server.testing import running_server

    with running_server(**database) as srv, srv.client() as api:
        srv.store.close()
        error = assert_error(api.get("/health"), 503, "SYS_DATABASE_UNAVAILABLE")
        assert "database unavailable" in error["message"]
        response = api.get("/v1/usage/metrics", params={"customer_id": "x"})
        error = assert_error(response, 500, "SYS_INTERNAL_ERROR")
        assert error["requestId"] in error["message"]
        assert "Traceback" not in response.text
        assert not [w for w in ("sqlite", "psycopg", "postgres") if w in response.text.lower()]
