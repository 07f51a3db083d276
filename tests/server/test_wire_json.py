"""The track answers are encoded from plain data (``server/wire_json.py``), not through the
response models: these tests pin the bytes to what the models write, over real HTTP, for
every kind of outcome (recorded, replayed, reused key, refused by a hard limit or for an
unknown customer or feature, unlimited, fractional, a quota that never resets, an instant
with and without microseconds)."""

from __future__ import annotations

from datetime import timedelta

import httpx

from billing_ui.core.models import TrackUsageBatchResult, TrackUsageResult
from billing_ui.server.testing import RunningServer

from .conftest import metric


def _as_models_write_it(response: httpx.Response, model: type[TrackUsageResult]) -> None:
    assert response.status_code == 200, response.text
    again = model.model_validate_json(response.content).model_dump_json(by_alias=True)
    assert response.content == again.encode()


def test_batch_answer_is_byte_for_byte_the_models(server: RunningServer, api, customer):
    free, enterprise = customer("free"), customer("enterprise")
    server.manual_clock.set(server.manual_clock.now().replace(microsecond=0))
    rows = [  # customer, feature, quantity, idempotency key
        (free, "api_calls", 1, "a"),
        (free, "api_calls", 1, "a"),
        (free, "seats", 2.5, "a"),
        (free, "ai_tokens", 9999, "b"),
        (free, "ai_tokens", 2, "c"),
        (free, "seats", 0.125, "d"),
        (enterprise, "api_calls", 3, "e"),
        ("nobody", "api_calls", 1, "f"),
        (free, "sso", 1, "g"),
    ]
    fields = ("customer_id", "feature_key", "quantity", "idempotency_key")
    events = [dict(zip(fields, row, strict=True)) for row in rows]
    first = api.post("/v1/usage/track-batch", json={"events": events})
    _as_models_write_it(first, TrackUsageBatchResult)  # type: ignore[arg-type]
    results = first.json()["results"]
    assert [r["error"] is None for r in results] == [True] * 4 + [False, True, True, False, False]
    assert results[0]["result"]["recorded_at"].endswith(":00Z")  # no microseconds written
    assert results[2]["result"]["usage"] is None  # "a" replays another feature's event
    server.manual_clock.advance(timedelta(microseconds=123_456))
    replay = api.post("/v1/usage/track-batch", json={"events": events[:1] + events[5:6]})
    _as_models_write_it(replay, TrackUsageBatchResult)  # type: ignore[arg-type]
    assert replay.json()["results"][0]["result"]["duplicate"] is True


def test_single_track_answer_is_byte_for_byte_the_models(server: RunningServer, api, customer):
    cid = customer("pro")
    server.manual_clock.advance(timedelta(microseconds=7))
    for body in (
        {"customer_id": cid, "feature_key": "api_calls", "quantity": 1.5},
        {"customer_id": cid, "feature_key": "seats", "quantity": 1, "idempotency_key": "k"},
        {"customer_id": cid, "feature_key": "seats", "quantity": 1, "idempotency_key": "k"},
    ):
        _as_models_write_it(api.post("/v1/usage/track", json=body), TrackUsageResult)


def test_batch_answer_text_edges_are_the_models(server: RunningServer, api, customer):
    """The batch answer is written as text (``server/batch_answer.py``): numbers that orjson
    writes in exponent form, keys that need escaping or are not ASCII, and replays recorded
    at another instant must still be the models' bytes."""
    cid = customer("enterprise")
    events = [
        {"customer_id": cid, "feature_key": f, "quantity": q, "idempotency_key": k}
        for f, (q, k) in zip(
            ["ai_tokens", "api_calls"] * 4,
            [
                (0.000001, "tiny"),
                (0.00001, "small"),
                (123456.789, 'quo"te'),
                (1, "back\\slash"),
                (2, "ключ"),
                (3, "\u00e9t\u00e9"),
                (999_999_999, "big"),
            ],
            strict=False,
        )
    ]
    first = api.post("/v1/usage/track-batch", json={"events": events})
    _as_models_write_it(first, TrackUsageBatchResult)  # type: ignore[arg-type]
    keys = [r["result"]["idempotency_key"] for r in first.json()["results"]]
    assert keys == [e["idempotency_key"] for e in events]
    assert all(r["result"]["duplicate"] is False for r in first.json()["results"])
    server.manual_clock.advance(timedelta(seconds=1, microseconds=5))
    again = api.post("/v1/usage/track-batch", json={"events": events[::-1]})
    _as_models_write_it(again, TrackUsageBatchResult)  # type: ignore[arg-type]
    replays = again.json()["results"]
    assert all(r["result"]["duplicate"] for r in replays)
    assert [r["result"]["recorded_at"] for r in replays] == [
        r["result"]["recorded_at"] for r in first.json()["results"][::-1]
    ]


def test_plain_batch_answers_and_writes_as_the_general_path(server: RunningServer, api, customer):
    """A batch whose every event is recorded is written and answered column-wise
    (``BillingService._track_plain``); the same events to a twin customer, with one event for
    an unknown customer added at the end, take the general path (a refusal is not plain).
    The twins' answers must be the same bytes item by item, in the models' bytes, and their
    usage the same: fractional usage before the batch, a hard limit reached exactly, a soft
    limit passed, an unlimited feature, keys that need escaping."""
    server.manual_clock.advance(timedelta(microseconds=321))
    twins = [customer("free"), customer("free")]
    rows = [  # feature, quantity, idempotency key
        ("api_calls", 999.5, 'q"uote'),
        ("seats", 0.125, "back\\slash"),
        ("ai_tokens", 9999, "b"),
        ("api_calls", 1, "c"),
        ("ai_tokens", 0.5, "d"),  # the hard limit (10,000) reached exactly
        ("api_calls", 2.25, "e"),  # past the soft limit (1,000)
    ]
    items = []
    for n, cid in enumerate(twins):
        before = {"customer_id": cid, "feature_key": "ai_tokens", "quantity": 0.5}
        assert api.post("/v1/usage/track", json=before).status_code == 200
        events = [
            {"customer_id": cid, "feature_key": f, "quantity": q, "idempotency_key": k}
            for f, q, k in rows
        ]
        if n == 1:
            events.append({"customer_id": "nobody", "feature_key": "api_calls", "quantity": 1,
                           "idempotency_key": "z"})  # fmt: skip
        answer = api.post("/v1/usage/track-batch", json={"events": events})
        _as_models_write_it(answer, TrackUsageBatchResult)  # type: ignore[arg-type]
        results = answer.json()["results"]
        assert [r["error"] is None for r in results] == [True] * len(rows) + [False] * n
        items.append(results[: len(rows)])
    assert items[0] == items[1]
    for feature in ("api_calls", "seats", "ai_tokens"):
        assert metric(api, twins[0], feature) == metric(api, twins[1], feature)
        assert server.count_events(twins[0], feature) == server.count_events(twins[1], feature)
