"""The track answers are encoded from plain data (``server/wire_json.py``), not through the
response models: these tests pin the bytes to what the models write, over real HTTP, for
every kind of outcome (recorded, replayed, reused key, refused by a hard limit or for an
unknown customer or feature, unlimited, fractional, a quota that never resets, an instant
with and without microseconds)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from billing_ui.core.models import TrackUsageBatchResult, TrackUsageResult
from billing_ui.server.sqlite_store import BUILD_DURING_COMMIT
from billing_ui.server.testing import RunningServer, query

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
    for cid in twins:
        before = {"customer_id": cid, "feature_key": "ai_tokens", "quantity": 0.5}
        assert api.post("/v1/usage/track", json=before).status_code == 200
    _answered_alike(
        server,
        api,
        [
            [{"customer_id": cid, "feature_key": f, "quantity": q, "idempotency_key": k}
             for f, q, k in rows]
            for cid in twins
        ],
    )  # fmt: skip
    assert _stored(server, twins[0]) == _stored(server, twins[1])
    for feature in ("api_calls", "seats", "ai_tokens"):
        assert metric(api, twins[0], feature) == metric(api, twins[1], feature)
        assert server.count_events(twins[0], feature) == server.count_events(twins[1], feature)


def _answered_alike(server: RunningServer, api: httpx.Client, twins: list[list[Any]]) -> None:
    """Send the first twin batch (it must be plain: ``BillingService._track_plain``), then the
    second with one event for an unknown customer added at the end (a refusal is not plain:
    the general path); their answers must be in the models' bytes and the same item by item."""
    items = []
    plain_before = server.app.state.service.plain_batches
    for n, events in enumerate(twins):
        unknown = {"customer_id": "nobody", "feature_key": "api_calls", "quantity": 1,
                   "idempotency_key": "z"}  # fmt: skip
        answer = api.post("/v1/usage/track-batch", json={"events": events + [unknown] * n})
        _as_models_write_it(answer, TrackUsageBatchResult)  # type: ignore[arg-type]
        results = answer.json()["results"]
        assert [r["error"] is None for r in results] == [True] * len(events) + [False] * n
        items.append(results[: len(events)])
        assert server.app.state.service.plain_batches == plain_before + 1  # the first only
    assert items[0] == items[1]


def _stored(server: RunningServer, customer_id: str) -> list[list[tuple[Any, ...]]]:
    """Every row stored for one customer (events, keys, aggregates, hourly buckets), without
    the customer's own id."""
    of = "JOIN customers c ON c.id = t.customer_id WHERE c.external_id = ?"
    return [
        query(server.database, f"SELECT {cols} FROM {table} t {of} ORDER BY {order}", [customer_id])
        for table, cols, order in (
            ("usage_events", "feature_key, quantity_micros, recorded_at_us, idempotency_key, "
             "metadata", "t.id"),
            ("idempotency_keys", "idempotency_key, feature_key, quantity_micros, recorded_at_us",
             "1"),
            ("usage_aggregates", "feature_key, period_start_us, period_end_us, consumed_micros, "
             "event_count, updated_at_us", "1, 2"),
            ("usage_hourly", "feature_key, hour_start_us, quantity_micros, event_count", "1, 2"),
        )
    ]  # fmt: skip


LARGE_BATCHES = {  # products of the twins' customers, then (feature, quantity) by event
    "one feature, one quantity, every usage limited": (
        ("free", "pro"),
        [("api_calls", 1)],
    ),
    "one feature, no usage limited": (("enterprise",), [("api_calls", 3)]),
    "features, quantities, limited and not, numbers in exponent form": (
        ("free", "pro", "enterprise"),
        [("api_calls", 1), ("storage_gb", 0.00001), ("ai_tokens", 2.5), ("api_calls", 7)],
    ),
}


@pytest.mark.parametrize("case", list(LARGE_BATCHES))
def test_large_plain_batch_answers_and_writes_as_the_general_path(
    server: RunningServer, api, customer, case: str
):
    """A plain batch of :data:`~billing_ui.server.sqlite_store.BUILD_DURING_COMMIT` events or
    more (SQLite builds its answer while COMMIT waits for the disk), column-wise: events of one
    feature are grouped by customer, of several by customer and feature; the answer's columns
    of usage limited or not, of one quantity or several. The same events to twin customers,
    with one event for an unknown customer added (a refusal is not plain), take the general
    path: the same answer item by item, in the models' bytes, and the same rows stored."""
    products, shapes = LARGE_BATCHES[case]
    size = 3 * BUILD_DURING_COMMIT + 1
    server.manual_clock.advance(timedelta(microseconds=654))
    twins = [[customer(p) for p in products] for _ in range(2)]
    _answered_alike(
        server,
        api,
        [
            [{"customer_id": group[i % len(group)], "feature_key": f, "quantity": q,
              "idempotency_key": f"key-{i}"}
             for i, (f, q) in enumerate(shapes[i % len(shapes)] for i in range(size))]
            for group in twins
        ],
    )  # fmt: skip
    for first, second in zip(*twins, strict=True):
        assert _stored(server, first) == _stored(server, second)
        assert _stored(server, first)[0]  # events were stored
