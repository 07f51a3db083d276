"""Structured logs of upstream calls (billing_ui.core.logs) and of the local server's requests
(billing_ui.server.observability): the fields are there, and no record, in any form, holds the
secret key or a session token.

Real calls only: both clients against the real local server (in this process, so its request
records are captured too), through the fault proxy for the retries and the lost answer, with a
wrong key for the authentication failure and a revoked token for the re-mint. Every credential
that crossed the wire is read back from the proxy's record of the requests, so the test greps
for exactly what was sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from faults import FaultProxy, drop_response, respond

from billing_ui.core.errors import AuthenticationError
from billing_ui.core.logs import FIELDS, JsonFormatter
from billing_ui.server.testing import RunningServer, create_customer
from tests.client.conftest import Api, MakeApi
from tests.log_records import Records

TRACK = "/v1/usage/track"


@pytest.fixture
def captured() -> Iterator[Records]:
    """Every record of billing_ui's loggers, at DEBUG (the most a developer would turn on)."""
    handler = Records()
    root = logging.getLogger("billing_ui")
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def upstream(records: list[logging.LogRecord], operation: str) -> list[logging.LogRecord]:
    return [
        r
        for r in records
        if r.name == "billing_ui.upstream" and getattr(r, "operation", None) == operation
    ]


async def test_no_record_holds_a_credential(
    make_api: MakeApi,
    proxied: Api,
    proxy: FaultProxy,
    server: RunningServer,
    captured: Records,
) -> None:
    cid = create_customer(server, ["pro"])
    # a track answered at once; one after two 503s; one whose first answer is lost
    await proxied.track_usage(cid, feature_key="api_calls", quantity=1)
    proxy.on(TRACK, respond(503), respond(503))
    await proxied.track_usage(cid, feature_key="api_calls", quantity=2, idempotency_key="k-503")
    proxy.on(TRACK, drop_response())
    await proxied.track_usage(cid, feature_key="api_calls", quantity=3)
    # session tokens: minted, used, revoked elsewhere, refused, minted again
    await proxied.get_entitlements(customer_id=cid)
    token = proxy.seen("/v1/features/entitlements")[0].headers["authorization"].split(" ", 1)[1]
    await make_api(server.base_url).revoke_session_token(token)
    await proxied.get_entitlements(customer_id=cid)
    await proxied.get_usage_metrics(customer_id=cid, feature_key="api_calls")
    # a wrong secret key, refused
    wrong = make_api(proxy.url, api_key="sk_test_wrong_" + "x" * 24)
    with pytest.raises(AuthenticationError):
        await wrong.track_usage(cid, feature_key="api_calls", quantity=1)

    credentials = {
        r.headers["authorization"].split(" ", 1)[1]
        for r in proxy.seen()
        if "authorization" in r.headers
    }
    sessions = {c for c in credentials if c.startswith("bos_session_")}
    assert len(sessions) >= 2  # the refused one and its replacement
    assert server.api_key in credentials
    assert "sk_test_wrong_" + "x" * 24 in credentials
    secrets = credentials | {s.split(".")[1] for s in sessions}  # and each signature alone

    records = captured.records
    assert upstream(records, "track_usage") and any(
        r.name == "billing_ui.server.requests" for r in records
    )
    plain = logging.Formatter("%(name)s %(levelname)s %(message)s")
    as_json = JsonFormatter()
    for record in records:
        for text in (plain.format(record), as_json.format(record), repr(vars(record))):
            leaked = [s for s in secrets if s in text]
            assert not leaked, f"{record.name}: {text[:300]}"

    # the fields, as the calls made them
    tracks = upstream(records, "track_usage")
    retried = next(r for r in tracks if getattr(r, "idempotency_key", None) == "k-503")
    assert (retried.attempts, retried.status, retried.customer, retried.feature) == (  # type: ignore[attr-defined]
        3,
        200,
        cid,
        "api_calls",
    )
    assert retried.latency_ms > 0  # type: ignore[attr-defined]
    sent_keys = {r.idempotency_key for r in proxy.seen(TRACK)}
    assert {getattr(r, "idempotency_key", None) for r in tracks} <= sent_keys | {None}
    assert any(r.attempts == 2 for r in tracks)  # type: ignore[attr-defined]  # lost answer
    refused = [r for r in tracks if r.status == 401]  # type: ignore[attr-defined]
    assert len(refused) == 1 and refused[0].attempts == 1  # type: ignore[attr-defined]
    ents = upstream(records, "get_entitlements")
    assert [r.status for r in ents] == [200, 401, 200]  # type: ignore[attr-defined]
    assert all(r.customer == cid for r in ents)  # type: ignore[attr-defined]
    assert len(upstream(records, "create_session_token")) == 2

    # the server's own request records: same fields, customer from the verified token
    served = [r for r in records if r.name == "billing_ui.server.requests"]
    server_tracks = [r for r in served if getattr(r, "operation", None) == "track_usage"]
    assert any(
        r.idempotency_key == "k-503" and r.status == 200 and r.customer == cid  # type: ignore[attr-defined]
        for r in server_tracks
    )
    session_reads = [r for r in served if getattr(r, "operation", None) == "session_entitlements"]
    assert session_reads and all(
        r.customer == cid
        for r in session_reads
        if r.status == 200  # type: ignore[attr-defined]
    )
    line = json.loads(as_json.format(retried))
    assert set(FIELDS) - {"events"} <= set(line)
