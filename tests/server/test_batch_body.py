"""The one-pass batch reader (``server/batch_body.py``) never changes what a batch means.

Its lean reader may only accept a body the models accept, with the same commands; everything
else must reach the models' reading, so a refusal names the same field and rule as before.
Checked on hand-picked edge cases (each a way the lean reader could differ: a key twice, a
colon in a string, escapes, NaN, decimals, metadata, non-ASCII ids) and on generated bodies.
The HTTP-level refusals are pinned by test_bad_inputs.py and test_conformance.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_ui.server import batch_body
from billing_ui.server.errors import ApiProblem
from billing_ui.server.service import Columns, TrackCommand


def event(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "customer_id": "cust_1",
        "feature_key": "api_calls",
        "quantity": 1,
        "idempotency_key": "k-1",
    }
    base.update(overrides)
    return base


def raw(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


def reference(body: bytes) -> list[TrackCommand] | tuple[int, Any]:
    """The models' answer: the commands, or the refusal's status and field errors."""
    try:
        return batch_body._reference(body)
    except ApiProblem as problem:
        return problem.status, problem.details


def assert_same_meaning(body: bytes) -> list[TrackCommand] | None:
    """The lean reader accepts only what the models accept, with the same commands; and the
    reader as a whole answers exactly as the models do. The lean reader's answer."""
    lean = batch_body._lean(body)
    expected = reference(body)
    if lean is not None:
        assert lean == expected
    columns = batch_body.plain_columns(body)  # the plainest reader: a subset of the lean one
    if columns is not None:
        assert columns.commands() == expected
        assert [type(q) for q in columns.quantities] == [type(c[2]) for c in expected]
    try:
        got: list[TrackCommand] | tuple[int, Any] = batch_body.track_commands(body)
    except ApiProblem as problem:
        got = problem.status, problem.details
    assert got == expected
    try:
        read = batch_body.track_columns(body)
        got = read.commands() if isinstance(read, Columns) else read
    except ApiProblem as problem:
        got = problem.status, problem.details
    assert got == expected
    return lean


PLAIN = raw(event(), event(customer_id="cust_2", quantity=2.5, idempotency_key="k-2"))

EDGE_CASES = {
    "plain": PLAIN,
    "pretty-printed": json.dumps({"events": [event()]}, indent=2).encode(),
    "space-before-colon": b'{"events" : [{"customer_id" : "c", "feature_key" : "api_calls",'
    b' "quantity" : 1, "idempotency_key" : "k"}]}',
    "key-twice-in-event": b'{"events":[{"customer_id":"a","customer_id":"b",'
    b'"feature_key":"api_calls","quantity":1,"idempotency_key":"k"}]}',
    "key-twice-hidden-by-colon-in-string": b'{"events":[{"customer_id":"a","quantity":1,'
    b'"quantity":2,"feature_key":"api_calls","idempotency_key":"k:1"}]}',
    "key-twice-space-and-colon-in-string": b'{"events":[{"customer_id" :"a","quantity":1,'
    b'"quantity" :2,"feature_key":"api_calls","idempotency_key":"k:1:2"}]}',
    "events-twice": b'{"events":[],"events":[{"customer_id":"a","feature_key":"api_calls",'
    b'"quantity":1,"idempotency_key":"k"}]}',
    "key-twice-in-metadata": raw(event(metadata={"a": 1}))[:-3] + b',"a":2}}]}',
    "colon-in-key": raw(event(idempotency_key="order:17:line:3")),
    "escaped-quote-colon": raw(event(idempotency_key='k\\":x')),
    "unicode-escape": raw(event(customer_id="caf\u00e9")),
    "non-ascii-raw": json.dumps(
        {"events": [event(customer_id="café")]}, ensure_ascii=False
    ).encode(),
    "lone-surrogate-in-metadata": b'{"events":[{"customer_id":"a","feature_key":"api_calls",'
    b'"quantity":1,"idempotency_key":"k","metadata":{"x":"\\ud800"}}]}',
    "nan-quantity": b'{"events":[{"customer_id":"a","feature_key":"api_calls",'
    b'"quantity":NaN,"idempotency_key":"k"}]}',
    "nan-in-metadata": b'{"events":[{"customer_id":"a","feature_key":"api_calls",'
    b'"quantity":1,"idempotency_key":"k","metadata":{"x":NaN}}]}',
    "huge-float-in-metadata": b'{"events":[{"customer_id":"a","feature_key":"api_calls",'
    b'"quantity":1,"idempotency_key":"k","metadata":{"x":1e400}}]}',
    "quantity-10**400": b'{"events":[{"customer_id":"a","feature_key":"api_calls","quantity":1'
    + b"0" * 400
    + b',"idempotency_key":"k"}]}',
    "quantity-7-decimals": raw(event(quantity=0.0000001)),
    "quantity-6-decimals": raw(event(quantity=0.000001)),
    "quantity-bool": raw(event(quantity=True)),
    "quantity-string": raw(event(quantity="1")),
    "quantity-zero": raw(event(quantity=0)),
    "quantity-max": raw(event(quantity=1_000_000_000)),
    "quantity-over-max": raw(event(quantity=1_000_000_001)),
    "metadata-nested": raw(event(metadata={"a": [{"b": {"c": 1}}], "d": None})),
    "metadata-too-deep": raw(event(metadata={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}})),
    "metadata-too-big": raw(event(metadata={"a": "x" * 5000})),
    "metadata-null": raw(event(metadata=None)),
    "metadata-list": raw(event(metadata=[1])),
    "idempotency-key-missing": raw({k: v for k, v in event().items() if k != "idempotency_key"}),
    "idempotency-key-null": raw(event(idempotency_key=None)),
    "idempotency-key-empty": raw(event(idempotency_key="")),
    "idempotency-key-with-space": raw(event(idempotency_key=" a b ")),
    "customer-surrounding-space": raw(event(customer_id=" a")),
    "customer-empty": raw(event(customer_id="")),
    "customer-256": raw(event(customer_id="c" * 256)),
    "customer-control": raw(event(customer_id="a\u0007b")),
    "feature-bad-pattern": raw(event(feature_key="a b")),
    "feature-65": raw(event(feature_key="f" * 65)),
    "unknown-field": raw(event(extra=1)),
    "unknown-top-field": b'{"events":[],"x":1}',
    "no-events": raw(),
    "1001-events": raw(*[event(idempotency_key=f"k{i}") for i in range(1001)]),
    "events-not-list": b'{"events":{}}',
    "array": b"[]",
    "bom": b"\xef\xbb\xbf" + PLAIN,
    "not-utf8": b'{"events":[{"customer_id":"\xff"}]}',
    "trailing-garbage": PLAIN + b" x",
    "deep-nesting": b'{"events":' + b"[" * 5000 + b"]" * 5000 + b"}",
}


@pytest.mark.parametrize("body", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_the_lean_reader_means_what_the_models_mean(body: bytes) -> None:
    assert_same_meaning(body)


def test_the_lean_reader_takes_plain_batches_and_colons_in_strings() -> None:
    """The fast path is not dead code: plain batches (and ids with colons, vouched for by the
    strict decoder) never need the models."""
    for name in ("plain", "pretty-printed", "space-before-colon", "colon-in-key"):
        assert batch_body._lean(EDGE_CASES[name]) is not None, name
    for name in ("key-twice-in-event", "key-twice-hidden-by-colon-in-string", "events-twice"):
        assert batch_body._lean(EDGE_CASES[name]) is None, name


def test_the_plainest_reader_takes_plain_batches_only() -> None:
    """``plain_columns`` reads the plainest batches (not dead code) and leaves every other
    body to the lean reader or the models: any escape, a colon in a string, metadata, a
    ``true`` quantity (which a set of values would hide behind a 1), a key twice."""
    for name in ("pretty-printed", "space-before-colon"):
        assert batch_body.plain_columns(EDGE_CASES[name]) is not None, name
    assert batch_body.plain_columns(PLAIN) == Columns(
        ["cust_1", "cust_2"], ["api_calls", "api_calls"], [1.0, 2.5], ["k-1", "k-2"]
    )
    for body in (
        raw(event(), event(quantity=True, idempotency_key="k-2")),
        raw(event(metadata=None)),
        raw(event(customer_id="a\\b")),
        *(EDGE_CASES[n] for n in EDGE_CASES if n.startswith(("key-", "colon", "escaped"))),
    ):
        assert batch_body.plain_columns(body) is None, body


texts = st.sampled_from(["a", "cust_1", "api_calls", "k:1", "é", "", " x", "a\u0000", "f" * 70])
values = st.one_of(
    texts,
    st.none(),
    st.booleans(),
    st.integers(-1, 10**10),
    st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(texts, st.integers() | texts, max_size=3),
)
events = st.dictionaries(
    st.sampled_from(["customer_id", "feature_key", "quantity", "idempotency_key", "metadata"]),
    values,
    max_size=5,
) | st.builds(
    event,
    customer_id=texts,
    quantity=st.integers(-1, 10) | st.floats(0, 10, allow_nan=False),
    idempotency_key=texts,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(events, max_size=4), st.sampled_from([None, 2]))
def test_generated_batches_mean_the_same_to_both_readers(
    items: list[dict[str, Any]], indent: int | None
) -> None:
    assert_same_meaning(json.dumps({"events": items}, indent=indent).encode())


# --- the one-event body (POST /v1/usage/track): the same reader, the idempotency key optional


def reference_one(body: bytes) -> TrackCommand | tuple[int, Any]:
    try:
        return batch_body._reference_one(body)
    except ApiProblem as problem:
        return problem.status, problem.details


def assert_same_meaning_one(body: bytes) -> TrackCommand | None:
    """As :func:`assert_same_meaning`, for ``TrackUsageRequest``."""
    lean = batch_body._lean_one(body)
    expected = reference_one(body)
    if lean is not None:
        assert lean == expected
    try:
        got: TrackCommand | tuple[int, Any] = batch_body.track_command(body)
    except ApiProblem as problem:
        got = problem.status, problem.details
    assert got == expected
    return lean


def one_event(body: bytes) -> bytes:
    """The batch edge case's first event as a one-event body (its bytes as they were, so
    every trick of the case is kept; a case that is no list of events is taken whole)."""
    for prefix in (b'{"events": [', b'{"events":[', b'{"events" : ['):
        if body.startswith(prefix) and body.endswith(b"]}"):
            return body[len(prefix) : -2]
    return body


@pytest.mark.parametrize("body", EDGE_CASES.values(), ids=EDGE_CASES.keys())
def test_the_lean_one_event_reader_means_what_the_model_means(body: bytes) -> None:
    assert_same_meaning_one(one_event(body))


def test_the_lean_one_event_reader_takes_plain_tracks() -> None:
    plain = json.dumps(event()).encode()
    assert batch_body._lean_one(plain) == TrackCommand("cust_1", "api_calls", 1, "k-1", None)
    no_key = json.dumps({k: v for k, v in event().items() if k != "idempotency_key"}).encode()
    assert batch_body._lean_one(no_key) == TrackCommand("cust_1", "api_calls", 1, None, None)
    twice = b'{"customer_id":"a","quantity":1,"quantity":2,"feature_key":"f",'
    twice += b'"idempotency_key":"k:1"}'
    assert batch_body._lean_one(twice) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.sampled_from([None, 2]))
def test_generated_tracks_mean_the_same_to_both_readers(
    item: dict[str, Any], indent: int | None
) -> None:
    assert_same_meaning_one(json.dumps(item, indent=indent).encode())
