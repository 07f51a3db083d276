"""Tracking usage: both track endpoints, the batch endpoint, idempotency (replays, concurrency,
the 24-hour window), hard limits (also under concurrency), and what a refusal leaves behind."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.options import WireOptions
from billing_ui.server.testing import create_customer, running_server

from .conftest import T0, assert_error, metric, track


def test_track_returns_the_usage_after_the_event(api, customer, server):
    cid = customer("free")
    body = track(api, cid, "api_calls", 2.5, metadata={"route": "/x"}).json()
    assert body["success"] is True and body["duplicate"] is False
    assert body["feature_key"] == "api_calls" and body["quantity"] == 2.5
    assert body["recorded_at"] == "2026-03-15T12:00:00Z"
    assert body["usage"] == {
        "consumed_units": 2.5,
        "limit_units": 1000.0,
        "remaining_units": 997.5,
        "period_start": "2026-03-01T00:00:00Z",
        "period_end": "2026-04-01T00:00:00Z",
    }
    body = track(api, cid, "api_calls", 0.000001).json()
    assert body["usage"]["consumed_units"] == 2.500001  # exact: integer micro-units
    assert server.count_events(cid, "api_calls") == 2


def test_session_track_records_for_the_token_customer(api, customer, session):
    cid = customer("pro")
    client = session(cid)
    response = client.post(
        "/v1/features/track-usage",
        json={
            "feature_key": "ai_tokens",
            "quantity": 300,
            "timestamp": "2020-01-01T00:00:00Z",
            "metadata": {"model": "x"},
            "idempotency_key": "s1",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["recorded_at"] == "2026-03-15T12:00:00Z"  # timestamp is ignored, as BillingOS
    assert body["usage"]["period_start"] == "2026-03-15T00:00:00Z"  # a daily feature
    assert body["idempotency_key"] == "s1"
    assert metric(api, cid, "ai_tokens")["consumed"] == 300


def test_overage_is_recorded_on_a_soft_limit(api, customer):
    cid = customer("free")
    assert track(api, cid, "api_calls", 999).status_code == 200
    body = track(api, cid, "api_calls", 5).json()
    assert body["usage"]["consumed_units"] == 1004 and body["usage"]["remaining_units"] == 0
    m = metric(api, cid, "api_calls")
    assert m["remaining"] == 0 and m["percentage_used"] == 100  # 100.4, rounded as BillingOS
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "api_calls"})
    assert check.json()["has_access"] is True  # soft: still allowed


def test_hard_limit_refuses_and_records_nothing(api, customer, server):
    cid = customer("free")  # seats: 3, hard
    assert track(api, cid, "seats", 2).status_code == 200
    before = server.fingerprint()
    error = assert_error(track(api, cid, "seats", 2, idempotency_key="k"), 400, "VAL_INVALID_INPUT")
    assert error["message"] == "quota_exceeded"
    assert error["details"] == {
        "feature_key": "seats",
        "limit": 3.0,
        "consumed": 2.0,
        "requested": 2.0,
    }
    assert server.fingerprint() == before
    # The refused key was not consumed: after an upgrade the same key records.
    api.put(f"/v1/customers/{cid}", json={"products": ["pro"]})
    body = track(api, cid, "seats", 2, idempotency_key="k").json()
    assert body["duplicate"] is False and body["usage"]["consumed_units"] == 4


def test_hard_limit_allows_exactly_up_to_the_limit(api, customer):
    cid = customer("free")
    assert track(api, cid, "seats", 3).status_code == 200
    assert_error(track(api, cid, "seats", 0.000001), 400, "VAL_INVALID_INPUT")
    check = api.get("/v1/usage/check", params={"customer_id": cid, "feature_key": "seats"}).json()
    assert check["has_access"] is False and check["reason"] == "quota_exceeded"


def test_concurrent_tracks_never_pass_a_hard_limit(server, customer):
    cid = customer("free")  # ai_tokens: 10,000 a day, hard

    def one(i: int) -> int:
        with server.client() as c:
            return track(c, cid, "ai_tokens", 1000, idempotency_key=f"c{i}").status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(25)))
    assert statuses.count(200) == 10 and statuses.count(400) == 15
    assert server.count_events(cid, "ai_tokens") == 10
    with server.client() as c:
        assert metric(c, cid, "ai_tokens")["consumed"] == 10_000


def test_unlimited_feature(api, customer):
    cid = customer("enterprise")
    body = track(api, cid, "api_calls", 10**9).json()
    assert body["usage"]["limit_units"] is None and body["usage"]["remaining_units"] is None
    m = metric(api, cid, "api_calls")
    assert m["limit"] == 0 and m["percentage_used"] == 0  # BillingOS: 0


def test_replay_counts_once_and_keeps_the_original_recorded_at(api, customer, server, clock):
    cid = customer("pro")
    first = track(api, cid, "api_calls", 7, idempotency_key="evt-1").json()
    clock.advance(timedelta(hours=3))
    assert track(api, cid, "api_calls", 1).status_code == 200  # other usage meanwhile
    again = track(api, cid, "api_calls", 7, idempotency_key="evt-1").json()
    assert again["duplicate"] is True
    assert again["recorded_at"] == first["recorded_at"] == "2026-03-15T12:00:00Z"
    assert again["usage"]["consumed_units"] == 8  # the usage as it is now
    assert server.count_events(cid) == 2
    assert metric(api, cid, "api_calls")["consumed"] == 8


def test_replay_through_the_header_and_the_other_endpoint(api, customer, session):
    cid = customer("pro")
    r1 = api.post(
        "/v1/usage/track",
        json={"customer_id": cid, "feature_key": "api_calls", "quantity": 1},
        headers={"Idempotency-Key": "hdr-1"},
    )
    assert r1.json()["idempotency_key"] == "hdr-1"
    r2 = session(cid).post(
        "/v1/features/track-usage",
        json={"feature_key": "api_calls", "quantity": 1, "idempotency_key": "hdr-1"},
    )
    assert r2.json()["duplicate"] is True
    assert metric(api, cid, "api_calls")["consumed"] == 1


def test_reusing_a_key_for_another_event_is_a_409_when_asked(tmp_path):
    options = WireOptions(reject_reused_keys=True)
    with running_server(db_path=tmp_path / "k.db", clock=ManualClock(T0), options=options) as srv:
        cid = create_customer(srv, ["pro"])
        with srv.client() as api:
            assert track(api, cid, "api_calls", 1, idempotency_key="k").status_code == 200
            before = srv.fingerprint()
            assert_error(
                track(api, cid, "api_calls", 2, idempotency_key="k"), 409, "IDEMPOTENCY_KEY_REUSED"
            )
            assert_error(
                track(api, cid, "storage_gb", 1, idempotency_key="k"),
                409,
                "IDEMPOTENCY_KEY_REUSED",
            )
            assert srv.fingerprint() == before


def test_twenty_concurrent_requests_with_one_key_count_once(server, customer):
    cid = customer("pro")

    def one(_: int) -> dict:
        with server.client() as c:
            response = track(c, cid, "api_calls", 3, idempotency_key="burst")
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(one, range(20)))
    assert sum(not r["duplicate"] for r in results) == 1
    assert len({r["recorded_at"] for r in results}) == 1
    assert server.count_events(cid) == 1
    with server.client() as c:
        assert metric(c, cid, "api_calls")["consumed"] == 3


def test_a_key_counts_again_after_24_hours(api, customer, server, clock: ManualClock):
    cid = customer("pro")
    assert track(api, cid, "api_calls", 1, idempotency_key="daily").json()["duplicate"] is False
    clock.advance(timedelta(hours=24) - timedelta(microseconds=1))
    assert track(api, cid, "api_calls", 1, idempotency_key="daily").json()["duplicate"] is True
    clock.advance(timedelta(microseconds=1))
    again = track(api, cid, "api_calls", 1, idempotency_key="daily").json()
    assert again["duplicate"] is False
    assert again["recorded_at"] == "2026-03-16T12:00:00Z"
    # ...and the renewed key is protected for the next 24 hours.
    assert track(api, cid, "api_calls", 1, idempotency_key="daily").json()["duplicate"] is True
    assert server.count_events(cid) == 2


def test_tracking_errors(api, customer, server):
    cid = customer("free")
    before = server.fingerprint()
    err = assert_error(track(api, "nobody", "api_calls", 1), 400, "VAL_INVALID_INPUT")
    assert err["message"] == "Customer not found: nobody"
    err = assert_error(track(api, cid, "projects", 1), 400, "VAL_INVALID_INPUT")
    assert err["message"] == "Feature is not a usage quota type"
    assert_error(track(api, cid, "sso", 1), 404, "RES_NOT_FOUND")  # not granted: grant first
    err = assert_error(track(api, cid, "no_such_feature", 1), 404, "RES_NOT_FOUND")
    assert err["message"] == "No active subscription with this feature"
    none = customer(customer_id="sub_less_" + cid)
    api.put(f"/v1/customers/{none}", json={"products": []})
    assert_error(track(api, none, "api_calls", 1), 404, "RES_NOT_FOUND")
    canceled = customer("pro", status="canceled")
    assert_error(track(api, canceled, "api_calls", 1), 404, "RES_NOT_FOUND")
    after = server.fingerprint()
    assert {k: v for k, v in after.items() if not k.startswith(("customers", "subscriptions"))} == {
        k: v for k, v in before.items() if not k.startswith(("customers", "subscriptions"))
    }


def test_batch_records_each_event_on_its_own(api, customer, server):
    free, pro = customer("free"), customer("pro")
    events = [
        {"customer_id": free, "feature_key": "api_calls", "quantity": 1, "idempotency_key": "b0"},
        {"customer_id": pro, "feature_key": "api_calls", "quantity": 2, "idempotency_key": "b1"},
        {"customer_id": free, "feature_key": "seats", "quantity": 5, "idempotency_key": "b2"},
        {
            "customer_id": "ghost",
            "feature_key": "api_calls",
            "quantity": 1,
            "idempotency_key": "b3",
        },
        {"customer_id": free, "feature_key": "projects", "quantity": 1, "idempotency_key": "b4"},
        {"customer_id": free, "feature_key": "api_calls", "quantity": 1, "idempotency_key": "b0"},
        {"customer_id": free, "feature_key": "api_calls", "quantity": 9, "idempotency_key": "b0"},
    ]
    response = api.post("/v1/usage/track-batch", json={"events": events})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["index"] for r in results] == list(range(7))
    assert results[0]["result"]["usage"]["consumed_units"] == 1
    assert results[1]["result"]["usage"]["consumed_units"] == 2
    assert results[2]["error"] == {"code": "VAL_INVALID_INPUT", "message": "quota_exceeded"}
    assert results[3]["error"]["message"] == "Customer not found: ghost"
    assert results[4]["error"]["message"] == "Feature is not a usage quota type"
    assert results[5]["result"]["duplicate"] is True  # same key earlier in the same batch
    assert results[6]["result"]["duplicate"] is True  # reused key: the first event (BillingOS)
    assert results[6]["result"]["quantity"] == 1
    assert server.count_events() == 2
    # Retrying the whole batch is safe: everything recorded is a replay now.
    again = api.post("/v1/usage/track-batch", json={"events": events}).json()["results"]
    assert again[0]["result"]["duplicate"] is True and again[1]["result"]["duplicate"] is True
    assert server.count_events() == 2


def test_batch_needs_a_key_per_event(api, customer, server):
    cid = customer("pro")
    before = server.fingerprint()
    response = api.post(
        "/v1/usage/track-batch",
        json={
            "events": [
                {
                    "customer_id": cid,
                    "feature_key": "api_calls",
                    "quantity": 1,
                    "idempotency_key": "a",
                },
                {"customer_id": cid, "feature_key": "api_calls", "quantity": 1},
            ]
        },
    )
    error = assert_error(response, 400, "VAL_INVALID_INPUT")
    assert [e["field"] for e in error["details"]["fieldErrors"]] == ["events.1.idempotency_key"]
    assert server.fingerprint() == before


def test_batch_of_1000(api, customer, server):
    cid = customer("enterprise")
    events = [
        {"customer_id": cid, "feature_key": "api_calls", "quantity": 1, "idempotency_key": f"e{i}"}
        for i in range(1000)
    ]
    results = api.post("/v1/usage/track-batch", json={"events": events}).json()["results"]
    assert all(r["error"] is None for r in results)
    assert results[-1]["result"]["usage"]["consumed_units"] == 1000
    assert server.count_events(cid) == 1000


def test_aggregates_never_overflow(api, customer, server):
    cid = customer("enterprise")  # api_calls unlimited
    batch = {
        "events": [
            {
                "customer_id": cid,
                "feature_key": "api_calls",
                "quantity": 1e9,
                "idempotency_key": f"{n}",
            }
            for n in range(1000)
        ]
    }
    for round_ in range(4):
        for e in batch["events"]:
            e["idempotency_key"] = f"{round_}-{e['idempotency_key'].split('-')[-1]}"
        assert all(
            r["error"] is None
            for r in api.post("/v1/usage/track-batch", json=batch).json()["results"]
        )
    # 4e12 units recorded; the ceiling is 2**62 micro-units (~4.6e12 units).
    for e in batch["events"]:
        e["idempotency_key"] = f"last-{e['idempotency_key']}"
    results = api.post("/v1/usage/track-batch", json=batch).json()["results"]
    refused = [r for r in results if r["error"]]
    assert refused and refused[0]["error"]["message"] == "quota_exceeded"
    assert metric(api, cid, "api_calls")["consumed"] <= 2**62 / 1e6
    assert server.count_events(cid) == 4000 + len(results) - len(refused)


@pytest.mark.parametrize("quantity", [1, 0.5, 123.456789, 1_000_000_000])
def test_quantities_round_trip_exactly(api, customer, quantity):
    cid = customer("enterprise")
    assert track(api, cid, "storage_gb", quantity).json()["quantity"] == quantity
    assert metric(api, cid, "storage_gb")["consumed"] == quantity


def test_track_at_a_real_loopback_connection_level(server, customer):
    """Plain httpx, new connection per call, no client object: what any language would do."""
    cid = customer("pro")
    response = httpx.post(
        server.base_url + "/v1/usage/track",
        content=b'{"customer_id": "%s", "feature_key": "api_calls", "quantity": 1}' % cid.encode(),
        headers={**server.auth(), "content-type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 200, response.text
    assert T0.isoformat().startswith(response.json()["recorded_at"][:19])


def test_expired_keys_are_pruned(api, customer, server, clock):
    cid = customer("pro")
    track(api, cid, "api_calls", 1, idempotency_key="old")
    clock.advance(timedelta(hours=23))
    track(api, cid, "api_calls", 1, idempotency_key="young")
    service = server.app.state.service
    assert service.prune_expired() == 0
    clock.advance(timedelta(hours=1))
    assert service.prune_expired() == 1
    assert server.fingerprint()["idempotency_keys.rows"] == 1
    assert track(api, cid, "api_calls", 1, idempotency_key="young").json()["duplicate"] is True
    assert track(api, cid, "api_calls", 1, idempotency_key="old").json()["duplicate"] is False
