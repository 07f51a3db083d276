"""A catalogue of bad inputs sent straight at the HTTP API.

Each case asserts the status, the envelope code, the field named in ``details.fieldErrors``,
and that the database is exactly as it was (row counts and sums of every table).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.testing import (
    RunningServer,
    create_customer,
    mint_session_token,
    running_server,
)

from .conftest import T0, assert_error, new_database

CID = "victim"
TRACK = "/v1/usage/track"


def body(**overrides: Any) -> dict[str, Any]:
    """A valid track body with some fields replaced (``None``-valued ``drop`` removes)."""
    base: dict[str, Any] = {"customer_id": CID, "feature_key": "api_calls", "quantity": 1}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


@dataclass
class Case:
    id: str
    method: str
    path: str
    field: str | None
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    session: bool = False
    status: int = 400
    code: str = "VAL_INVALID_INPUT"


JSON = {"content-type": "application/json"}
CASES = [
    # -- the body as a whole --
    Case("no-content-type", "POST", TRACK, "body", content=json.dumps(body()).encode()),
    Case(
        "text-plain", "POST", TRACK, "body", content=b"{}", headers={"content-type": "text/plain"}
    ),
    Case(
        "form-encoded",
        "POST",
        TRACK,
        "body",
        content=b"customer_id=victim",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Case("bad-json", "POST", TRACK, "body", content=b'{"customer_id": ', headers=JSON),
    Case("empty-body", "POST", TRACK, "body", content=b"", headers=JSON),
    Case("json-array", "POST", TRACK, "body", json=[body()]),
    Case("json-string", "POST", TRACK, "body", json="track please"),
    Case("json-null", "POST", TRACK, "body", content=b"null", headers=JSON),
    Case("not-utf8", "POST", TRACK, "body", content=b'{"customer_id": "\xff\xfe"}', headers=JSON),
    Case(
        "absurd-nesting",
        "POST",
        TRACK,
        "body",
        content=b"[" * 200_000 + b"]" * 200_000,
        headers=JSON,
    ),
    Case(
        "5000-digit-number",
        "POST",
        TRACK,
        "body",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":'
        + b"9" * 5000
        + b"}",
        headers=JSON,
    ),
    Case(
        "body-over-8MiB", "POST", TRACK, "body", content=b" " * (8 * 1024 * 1024 + 1), headers=JSON
    ),
    Case("unknown-field", "POST", TRACK, "customer", json=body(customer="victim")),
    # -- quantity --
    Case("quantity-missing", "POST", TRACK, "quantity", json=body(quantity=_DROP)),
    Case("quantity-zero", "POST", TRACK, "quantity", json=body(quantity=0)),
    Case("quantity-negative", "POST", TRACK, "quantity", json=body(quantity=-3)),
    Case("quantity-string", "POST", TRACK, "quantity", json=body(quantity="7")),
    Case("quantity-bool", "POST", TRACK, "quantity", json=body(quantity=True)),
    Case("quantity-null", "POST", TRACK, "quantity", json=body(quantity=None)),
    Case(
        "quantity-NaN",
        "POST",
        TRACK,
        "quantity",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":NaN}',
        headers=JSON,
    ),
    Case(
        "quantity-infinite",
        "POST",
        TRACK,
        "quantity",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":1e999}',
        headers=JSON,
    ),
    Case("quantity-too-big", "POST", TRACK, "quantity", json=body(quantity=1e10)),
    Case("quantity-10**400", "POST", TRACK, "quantity", json=body(quantity=10**400)),
    Case("quantity--10**400", "POST", TRACK, "quantity", json=body(quantity=-(10**400))),
    Case(
        "quantity-big-decimal",
        "POST",
        TRACK,
        "quantity",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":'
        + b"9" * 300
        + b".5}",
        headers=JSON,
    ),
    Case(
        "quantity-1.5e400",
        "POST",
        TRACK,
        "quantity",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":1.5e400}',
        headers=JSON,
    ),
    Case(
        "batch-quantity-10**400",
        "POST",
        "/v1/usage/track-batch",
        "events.0.quantity",
        json={"events": [body(idempotency_key="a", quantity=10**400)]},
    ),
    Case(
        "session-quantity-10**400",
        "POST",
        "/v1/features/track-usage",
        "quantity",
        json={"feature_key": "api_calls", "quantity": 10**400},
        session=True,
    ),
    # -- strict JSON: one reading only --
    Case(
        "duplicate-key",
        "POST",
        TRACK,
        "body",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":1,"quantity":900}',
        headers=JSON,
    ),
    Case(
        "duplicate-key-nested",
        "POST",
        TRACK,
        "body",
        content=b'{"customer_id":"victim","feature_key":"api_calls","quantity":1,'
        b'"metadata":{"a":1,"a":2}}',
        headers=JSON,
    ),
    Case(
        "utf8-bom",
        "POST",
        TRACK,
        "body",
        content=b"\xef\xbb\xbf" + json.dumps(body()).encode(),
        headers=JSON,
    ),
    Case(
        "charset-latin-1",
        "POST",
        TRACK,
        "body",
        content=json.dumps(body()).encode(),
        headers={"content-type": "application/json; charset=latin-1"},
    ),
    Case(
        "utf-16-body",
        "POST",
        TRACK,
        "body",
        content=json.dumps(body()).encode("utf-16"),
        headers=JSON,
    ),
    Case("quantity-7-decimals", "POST", TRACK, "quantity", json=body(quantity=0.0000001)),
    Case("quantity-object", "POST", TRACK, "quantity", json=body(quantity={"n": 1})),
    # -- feature_key / customer_id / idempotency_key / metadata --
    Case("feature-empty", "POST", TRACK, "feature_key", json=body(feature_key="")),
    Case("feature-space", "POST", TRACK, "feature_key", json=body(feature_key="api calls")),
    Case("feature-65-chars", "POST", TRACK, "feature_key", json=body(feature_key="a" * 65)),
    Case("feature-int", "POST", TRACK, "feature_key", json=body(feature_key=123)),
    Case(
        "feature-sql",
        "POST",
        TRACK,
        "feature_key",
        json=body(feature_key="x'; DROP TABLE usage_events;--"),
    ),
    Case("customer-missing", "POST", TRACK, "customer_id", json=body(customer_id=_DROP)),
    Case("customer-padded", "POST", TRACK, "customer_id", json=body(customer_id=" victim ")),
    Case(
        "customer-control-char", "POST", TRACK, "customer_id", json=body(customer_id="vic\x00tim")
    ),
    Case("customer-256-chars", "POST", TRACK, "customer_id", json=body(customer_id="c" * 256)),
    Case("key-empty", "POST", TRACK, "idempotency_key", json=body(idempotency_key="")),
    Case("key-256-chars", "POST", TRACK, "idempotency_key", json=body(idempotency_key="k" * 256)),
    Case("key-number", "POST", TRACK, "idempotency_key", json=body(idempotency_key=5)),
    Case(
        "key-header-mismatch",
        "POST",
        TRACK,
        "idempotency_key",
        json=body(idempotency_key="a"),
        headers={"Idempotency-Key": "b"},
    ),
    Case(
        "key-header-empty",
        "POST",
        TRACK,
        "Idempotency-Key",
        json=body(),
        headers={"Idempotency-Key": ""},
    ),
    Case("metadata-list", "POST", TRACK, "metadata", json=body(metadata=[1, 2])),
    Case("metadata-too-big", "POST", TRACK, "metadata", json=body(metadata={"x": "y" * 5000})),
    Case(
        "metadata-too-deep",
        "POST",
        TRACK,
        "metadata",
        json=body(metadata={"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}),
    ),
    # -- session track --
    Case(
        "session-customer-field",
        "POST",
        "/v1/features/track-usage",
        "customer_id",
        json={"feature_key": "api_calls", "quantity": 1, "customer_id": CID},
        session=True,
    ),
    Case(
        "session-timestamp-int",
        "POST",
        "/v1/features/track-usage",
        "timestamp",
        json={"feature_key": "api_calls", "quantity": 1, "timestamp": 1700000000},
        session=True,
    ),
    Case(
        "session-quantity-zero",
        "POST",
        "/v1/features/track-usage",
        "quantity",
        json={"feature_key": "api_calls", "quantity": 0},
        session=True,
    ),
    # -- batch --
    Case("batch-empty", "POST", "/v1/usage/track-batch", "events", json={"events": []}),
    Case(
        "batch-1001",
        "POST",
        "/v1/usage/track-batch",
        "events",
        json={"events": [body(idempotency_key=f"k{i}") for i in range(1001)]},
    ),
    Case("batch-not-list", "POST", "/v1/usage/track-batch", "events", json={"events": body()}),
    Case(
        "batch-bad-item",
        "POST",
        "/v1/usage/track-batch",
        "events.1.quantity",
        json={"events": [body(idempotency_key="a"), body(idempotency_key="b", quantity=-1)]},
    ),
    # -- session tokens --
    Case(
        "token-ttl-59",
        "POST",
        "/v1/session-tokens",
        "expiresIn",
        json={"externalUserId": CID, "expiresIn": 59},
    ),
    Case(
        "token-ttl-86401",
        "POST",
        "/v1/session-tokens",
        "expiresIn",
        json={"externalUserId": CID, "expiresIn": 86401},
    ),
    Case("token-no-user", "POST", "/v1/session-tokens", "externalUserId", json={"expiresIn": 600}),
    Case(
        "token-ops-string",
        "POST",
        "/v1/session-tokens",
        "allowedOperations",
        json={"externalUserId": CID, "allowedOperations": "all"},
    ),
    Case("revoke-bad-jti", "DELETE", "/v1/session-tokens/tok_short", "jti"),
    # -- query parameters --
    Case("metrics-no-customer", "GET", "/v1/usage/metrics", "customer_id", params={}),
    Case(
        "metrics-empty-customer",
        "GET",
        "/v1/usage/metrics",
        "customer_id",
        params={"customer_id": ""},
    ),
    Case(
        "metrics-bad-feature",
        "GET",
        "/v1/usage/metrics",
        "feature_key",
        params={"customer_id": CID, "feature_key": "no/slash"},
    ),
    Case("check-no-feature", "GET", "/v1/usage/check", "feature_key", params={"customer_id": CID}),
    Case(
        "history-bad-bucket",
        "GET",
        "/v1/usage/history",
        "bucket",
        params={"customer_id": CID, "feature_key": "api_calls", "bucket": "week"},
    ),
    Case(
        "session-check-no-feature",
        "GET",
        "/v1/features/check",
        "feature_key",
        params={},
        session=True,
    ),
    Case(
        "session-metrics-bad-feature",
        "GET",
        "/v1/features/usage-metrics",
        "feature_key",
        params={"feature_key": "x" * 65},
        session=True,
    ),
    # -- customers --
    Case(
        "customer-path-padded",
        "PUT",
        "/v1/customers/%20victim",
        "external_user_id",
        json={"products": ["pro"]},
    ),
    Case(
        "customer-path-not-utf8",
        "PUT",
        "/v1/customers/%ff%fe",
        "path",
        json={"products": ["pro"]},
    ),
    Case(
        "query-not-utf8",
        "GET",
        "/v1/usage/metrics?customer_id=%ff",
        "customer_id",
    ),
    Case(
        "customer-products-string",
        "PUT",
        f"/v1/customers/{CID}",
        "products",
        json={"products": "pro"},
    ),
    Case(
        "customer-unknown-product",
        "PUT",
        f"/v1/customers/{CID}",
        "products.0",
        json={"products": ["gold"]},
    ),
    Case(
        "customer-bad-status",
        "PUT",
        f"/v1/customers/{CID}",
        "status",
        json={"products": ["pro"], "status": "sleeping"},
    ),
    Case("customer-no-body", "PUT", f"/v1/customers/{CID}", "body", content=b"", headers=JSON),
    # -- not input errors, but refusals that must change nothing either --
    Case("unknown-route", "GET", "/v1/nothing-here", None, status=404, code="RES_NOT_FOUND"),
    Case("wrong-method", "GET", TRACK, None, status=404, code="RES_NOT_FOUND"),
]


@pytest.fixture(scope="module")
def srv(
    request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, str]]:
    db = new_database(request, store_kind, tmp_path_factory.mktemp("bad"))
    with running_server(**db, clock=ManualClock(T0)) as server:
        create_customer(server, ["pro"], customer_id=CID)
        httpx.post(  # some usage, so that sums are not all zero
            server.base_url + TRACK,
            json=body(quantity=12, idempotency_key="seed"),
            headers=server.auth(),
        ).raise_for_status()
        yield server, mint_session_token(server, CID)


def test_the_catalogue_is_big_enough():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(srv, case: Case):
    server, token = srv
    assert_refused_and_unchanged(server.base_url, server.auth, server.fingerprint, token, case)


def assert_refused_and_unchanged(
    base_url: str,
    auth: Callable[[str | None], dict[str, str]],
    fingerprint: Callable[[], dict[str, int]],
    token: str,
    case: Case,
) -> None:
    """Send ``case`` to the server at ``base_url``: its status, envelope code and field, and
    the database exactly as before (also used against the server process,
    test_bad_inputs_process.py)."""
    before = fingerprint()
    headers = {**auth(token if case.session else None), **case.headers}
    kwargs: dict[str, Any] = {"headers": headers, "params": case.params}
    if case.content is not None:
        kwargs["content"] = case.content
    elif case.json is not None:
        kwargs["json"] = case.json
    response = httpx.request(case.method, base_url + case.path, timeout=30, **kwargs)
    error = assert_error(response, case.status, case.code)
    if case.field is not None:
        fields = [e["field"] for e in error["details"]["fieldErrors"]]
        assert case.field in fields, error
        for e in error["details"]["fieldErrors"]:
            assert e["rule"] and e["message"]
    assert fingerprint() == before


def test_the_server_still_works_afterwards(srv):
    server, _ = srv
    response = httpx.post(server.base_url + TRACK, json=body(), headers=server.auth())
    assert response.status_code == 200
