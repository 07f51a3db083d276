"""Property tests (hypothesis) straight at the HTTP API: arbitrary JSON never produces a 500
or changes the database unless accepted; tracked quantities add up exactly."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from billing_ui.server.clock import ManualClock
from billing_ui.server.testing import RunningServer, create_customer, running_server

from .conftest import T0, new_database

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
near_valid_track = st.fixed_dictionaries(
    {
        "customer_id": st.sampled_from(["prop", "ghost", "", " prop", 7]),
        "feature_key": st.sampled_from(["api_calls", "seats", "sso", "nope", "a b", None]),
        "quantity": st.one_of(
            st.integers(-2, 10**12),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=5),
            st.none(),
        ),
    },
    optional={
        "idempotency_key": st.one_of(st.text(max_size=8), st.integers()),
        "metadata": json_values,
        "extra": st.integers(),
    },
)
POSTS = [
    "/v1/usage/track",
    "/v1/usage/track-batch",
    "/v1/session-tokens",
    "/v1/features/track-usage",
]
ALLOWED = {200, 201, 400, 401, 404, 409}


@pytest.fixture(scope="module")
def srv(
    request: pytest.FixtureRequest, store_kind: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningServer, httpx.Client]]:
    db = new_database(request, store_kind, tmp_path_factory.mktemp("prop"))
    with running_server(**db, clock=ManualClock(T0)) as server:
        create_customer(server, ["free"], customer_id="prop")
        with server.client() as client:
            yield server, client


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(path=st.sampled_from(POSTS), payload=st.one_of(json_values, near_valid_track))
def test_arbitrary_json_never_breaks_the_server(srv, path, payload):
    server, client = srv
    before = server.fingerprint()
    if path == "/v1/usage/track-batch" and isinstance(payload, dict) and "customer_id" in payload:
        payload = {"events": [payload]}
    response = client.post(path, json=payload)
    assert response.status_code in ALLOWED, response.text
    body = response.json()
    if response.status_code >= 400:
        assert body["error"]["requestId"] == response.headers["x-request-id"]
        assert server.fingerprint() == before


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    quantities=st.lists(
        st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6), places=6),
        min_size=1,
        max_size=8,
    )
)
def test_quantities_add_up_exactly(srv, quantities):
    server, client = srv
    cid = create_customer(server, ["enterprise"])
    for q in quantities:
        response = client.post(
            "/v1/usage/track",
            json={"customer_id": cid, "feature_key": "storage_gb", "quantity": float(q)},
        )
        assert response.status_code == 200, response.text
    metrics = client.get(
        "/v1/usage/metrics", params={"customer_id": cid, "feature_key": "storage_gb"}
    )
    consumed = Decimal(repr(metrics.json()["metrics"][0]["consumed"]))
    assert consumed == sum(quantities)
