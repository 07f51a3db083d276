"""The durable outbox against the real local server over loopback, with faults from the real
TCP fault proxy (tests/faults.py): what is queued, what is not, exactly-once delivery, bounds,
counters, leases, the fallback to single tracks.

Each test counts what the billing database itself holds (``billed``: the server's SQLite file).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from billing_ui.core import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BillingClient,
    CustomerNotFoundError,
    InvalidInputError,
    PoolExhaustedError,
    QuotaExceededError,
)
from billing_ui.core.outbox import (
    Outbox,
    OutboxFullError,
    OutboxStore,
    QueuedTrack,
    Settlement,
    is_retryable_failure,
)
from billing_ui.core.outbox_sqlite import SQLiteOutboxStore
from billing_ui.server.testing import RunningServer, create_customer
from tests.faults import FaultProxy, close, drop_response, free_port, respond
from tests.outbox.conftest import OpenStore
from tests.outbox.helpers import billed


@pytest.fixture
def proxy(billing_server: RunningServer) -> Iterator[FaultProxy]:
    with FaultProxy(billing_server.base_url) as p:
        yield p


def client_for(url: str, **options: object) -> BillingClient:
    options.setdefault("max_retries", 0)
    options.setdefault("timeout", 2.0)
    return BillingClient(base_url=url, **options)  # type: ignore[arg-type]


def test_api_down_then_back_every_track_billed_exactly_once(
    billing_server: RunningServer, tmp_path: Path, proxy: FaultProxy, store: OutboxStore
) -> None:
    """50 tracks while the API is unreachable: 10 reach the server but their answers are lost
    (the write happened), 40 never arrive. All 50 are queued; once the API is back, one
    delivery pass leaves exactly 50 events in the billing database, none doubled."""
    n, landed = 50, 10
    customer = create_customer(billing_server, ["pro"])
    outbox = Outbox(store)
    proxy.on("/v1/usage/track", *[drop_response()] * landed, *[close()] * (n - landed))
    with client_for(proxy.url) as client:
        outcomes = [outbox.track_or_queue(client, customer, "api_calls", 1) for _ in range(n)]
        assert all(isinstance(o, QueuedTrack) for o in outcomes)
        assert billed(tmp_path / "billing.db", customer) == (landed, landed)
        assert outbox.stats().depth == n
        report = outbox.deliver(client, limit=100)
    assert (report.claimed, report.delivered, report.failed) == (n, n, 0)
    assert billed(tmp_path / "billing.db", customer) == (n, n)
    # The batch carried the very keys of the first attempts.
    first_keys = {o.idempotency_key for o in outcomes if isinstance(o, QueuedTrack)}
    (batch,) = proxy.seen("/v1/usage/track-batch")
    sent = batch.json()
    assert isinstance(sent, dict)
    assert {e["idempotency_key"] for e in sent["events"]} == first_keys
    stats = outbox.stats()
    assert (stats.depth, stats.delivered, stats.failed_total) == (0, n, 0)


def test_a_track_that_succeeds_is_not_queued(
    billing_server: RunningServer, tmp_path: Path, store: OutboxStore
) -> None:
    customer = create_customer(billing_server, ["pro"])
    outbox = Outbox(store)
    with client_for(billing_server.base_url) as client:
        result = outbox.track_or_queue(client, customer, "api_calls", 2)
    assert not isinstance(result, QueuedTrack)
    assert outbox.stats().depth == 0
    assert billed(tmp_path / "billing.db", customer) == (1, 1)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_retryable_statuses_are_queued_after_the_clients_own_retries(
    billing_server: RunningServer,
    tmp_path: Path,
    proxy: FaultProxy,
    store: OutboxStore,
    status: int,
) -> None:
    customer = create_customer(billing_server, ["pro"])
    outbox = Outbox(store)
    proxy.on("/v1/usage/track", *[respond(status, {"Retry-After": "0"})] * 2)
    with client_for(proxy.url, max_retries=1, retry_initial_delay=0.01) as client:
        queued = outbox.track_or_queue(client, customer, "api_calls", 1)
        assert isinstance(queued, QueuedTrack)
        assert str(status) in queued.last_error or "RateLimit" in queued.last_error
        # Both attempts of the client and the outbox's entry share one key.
        assert {r.idempotency_key for r in proxy.seen("/v1/usage/track")} == {
            queued.idempotency_key
        }
        assert outbox.deliver(client).delivered == 1
    assert billed(tmp_path / "billing.db", customer) == (1, 1)


def test_final_failures_are_raised_and_never_queued(
    billing_server: RunningServer, store: OutboxStore
) -> None:
    outbox = Outbox(store)
    free = create_customer(billing_server, ["free"])
    with client_for(billing_server.base_url) as client:
        with pytest.raises(CustomerNotFoundError):
            outbox.track_or_queue(client, "cus_nobody_here", "api_calls", 1)
        with pytest.raises(InvalidInputError) as bad:
            outbox.track_or_queue(client, free, "api_calls", -1)
        assert bad.value.field == "quantity"
        # ai_tokens is hard-limited on the free plan (10,000 a day).
        with pytest.raises(QuotaExceededError):
            outbox.track_or_queue(client, free, "ai_tokens", 10_001)
    with (
        client_for(billing_server.base_url, api_key="sk_test_wrong") as wrong,
        pytest.raises(AuthenticationError),
    ):
        outbox.track_or_queue(wrong, free, "api_calls", 1)
    assert outbox.stats().depth == 0


def test_fail_closed_features_are_refused_when_the_api_is_down_unless_the_app_says_otherwise(
    billing_server: RunningServer, proxy: FaultProxy, store: OutboxStore
) -> None:
    customer = create_customer(billing_server, ["pro"])
    proxy.on("/v1/usage/track", close(), close())
    with client_for(proxy.url) as client:
        with pytest.raises(APIConnectionError):
            Outbox(store).track_or_queue(client, customer, "seats", 1)
        assert Outbox(store).stats().depth == 0
        lenient = Outbox(store, fail_closed=lambda key: False)
        assert isinstance(lenient.track_or_queue(client, customer, "seats", 1), QueuedTrack)
        assert lenient.stats().depth == 1


def test_full_outbox_raises_a_typed_error_and_keeps_what_it_has(
    store: OutboxStore,
) -> None:
    outbox = Outbox(store, max_size=3)
    for i in range(3):
        outbox.put("cus_a", "api_calls", 1, idempotency_key=f"k{i}")
    with pytest.raises(OutboxFullError) as full:
        outbox.put("cus_a", "api_calls", 1, idempotency_key="k3")
    assert full.value.max_size == 3
    assert "3 pending" in str(full.value)
    # The same event again (same key) is not a new entry.
    assert store.add([QueuedTrack("k0", "cus_a", "api_calls", 1.0)], max_size=3) == 0
    assert outbox.stats().depth == 3


def test_old_entries_are_reported_and_kept(
    store: OutboxStore, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1_000_000.0]
    outbox = Outbox(store, max_age_s=60, clock=lambda: now[0])
    outbox.put("cus_a", "api_calls", 1, idempotency_key="old")
    now[0] += 30
    outbox.put("cus_a", "api_calls", 1, idempotency_key="new")
    now[0] += 45
    stats = outbox.stats()
    assert (stats.depth, stats.overdue, stats.oldest_age_s) == (2, 1, 75.0)
    # A delivery pass against an API that is down warns about them and keeps them.
    with (
        client_for(f"http://127.0.0.1:{free_port()}") as client,
        caplog.at_level("WARNING", "billing_ui.outbox"),
    ):
        report = outbox.deliver(client)
    assert (report.claimed, report.retried, report.delivered) == (2, 2, 0)
    assert "older than 60 s" in caplog.text
    assert outbox.stats().depth == 2


def test_entries_refused_on_delivery_are_kept_as_failed_and_counted(
    billing_server: RunningServer, store: OutboxStore
) -> None:
    customer = create_customer(billing_server, ["pro"])
    outbox = Outbox(store)
    outbox.put(customer, "api_calls", 1, idempotency_key="good")
    outbox.put("cus_gone_missing", "api_calls", 1, idempotency_key="bad")
    with client_for(billing_server.base_url) as client:
        report = outbox.deliver(client)
    assert (report.delivered, report.failed) == (1, 1)
    (failure,) = store.failures()
    assert failure.idempotency_key == "bad"
    assert "Customer not found" in failure.last_error
    stats = outbox.stats()
    assert (stats.depth, stats.failed, stats.delivered, stats.failed_total) == (0, 1, 1, 1)


def test_backend_without_batches_gets_single_tracks(
    billing_server: RunningServer, tmp_path: Path, proxy: FaultProxy, store: OutboxStore
) -> None:
    """A hosted BillingOS has no /v1/usage/track-batch (404): the outbox sends one by one."""
    customer = create_customer(billing_server, ["pro"])
    outbox = Outbox(store)
    for i in range(3):
        outbox.put(customer, "api_calls", 1, idempotency_key=f"single-{customer}-{i}")
    missing = {"error": {"code": "RES_NOT_FOUND", "message": "Not Found"}, "statusCode": 404}
    proxy.on("/v1/usage/track-batch", respond(404, body=missing))
    with client_for(proxy.url) as client:
        report = outbox.deliver(client)
    assert report.delivered == 3
    assert outbox.batches is False
    assert len(proxy.seen("/v1/usage/track")) == 3
    assert billed(tmp_path / "billing.db", customer) == (3, 3)


def test_retryable_failures_back_off(store: OutboxStore) -> None:
    now = [1_000.0]
    outbox = Outbox(store, clock=lambda: now[0])
    outbox.put("cus_a", "api_calls", 1, idempotency_key="k")
    with client_for(f"http://127.0.0.1:{free_port()}") as client:
        assert outbox.deliver(client).retried == 1
        assert outbox.deliver(client).claimed == 0  # not due yet
        now[0] += 301  # past the longest backoff
        assert outbox.deliver(client).claimed == 1


def test_once_the_api_answers_the_backlog_is_due_at_once(
    billing_server: RunningServer, tmp_path: Path, store: OutboxStore
) -> None:
    """After an outage the queued tracks have backed off for seconds to minutes. The first
    delivery that goes through makes the whole backlog due, so it drains in the next pass, not
    at each entry's own retry time; entries leased to a worker are left alone."""
    customer = create_customer(billing_server, ["pro"])
    now = [1_000.0]
    outbox = Outbox(store, clock=lambda: now[0])
    for i in range(5):
        outbox.put(customer, "api_calls", 1, idempotency_key=f"late-{i}")
    with client_for(f"http://127.0.0.1:{free_port()}") as down:  # nothing listens: down
        for _ in range(4):
            assert outbox.deliver(down).retried == 5
            now[0] += 301  # past the longest backoff: due again, one attempt more
        assert outbox.deliver(down).retried == 5  # 5th attempt: ~16 s of backoff ahead
    leased = QueuedTrack("leased", customer, "api_calls", 1.0, created_at=now[0])
    store.add([leased], max_size=100)
    assert [e.idempotency_key for e in store.claim(1, now[0], lease_s=60)] == ["leased"]
    outbox.put(customer, "api_calls", 1, idempotency_key="fresh")  # due now
    with client_for(billing_server.base_url) as up:
        first = outbox.deliver(up)
        assert (first.claimed, first.delivered) == (1, 1)  # only "fresh" was due
        second = outbox.deliver(up)  # the same moment: the backlog is due now
        assert (second.claimed, second.delivered) == (5, 5)
        assert outbox.deliver(up).claimed == 0  # the leased entry waits for its lease
    assert billed(tmp_path / "billing.db", customer) == (6, 6)
    assert outbox.stats().depth == 1


def test_two_workers_never_claim_the_same_entry(open_store: OpenStore) -> None:
    """Two connections to one outbox (as two processes would have) claim concurrently: every
    entry goes to exactly one of them; after its lease runs out, an entry is claimable again."""
    first, second = open_store(), open_store()
    first.add(
        [QueuedTrack(f"k{i}", "cus_a", "api_calls", 1.0, created_at=0) for i in range(400)],
        max_size=1000,
    )
    claimed: list[list[str]] = [[], []]
    start = threading.Barrier(2)

    def drain(index: int, s: OutboxStore) -> None:
        start.wait()
        while batch := s.claim(7, now=10.0, lease_s=50):
            claimed[index].extend(e.idempotency_key for e in batch)

    threads = [threading.Thread(target=drain, args=(i, s)) for i, s in enumerate([first, second])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed[0] + claimed[1]) == sorted(f"k{i}" for i in range(400))
    assert not set(claimed[0]) & set(claimed[1])
    assert first.claim(1000, now=59.0, lease_s=50) == []  # leases still run
    assert len(second.claim(1000, now=61.0, lease_s=50)) == 400  # ended: claimable


def test_the_outbox_file_is_wal_and_synchronous_full(tmp_path: Path) -> None:
    import sqlite3

    store = SQLiteOutboxStore(tmp_path / "outbox.db")
    db = sqlite3.connect(store.path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def _status_error(status: int, code: str = "X", message: str = "m") -> Exception:
    """The typed error the client raises for a real response with this status and envelope."""
    from billing_ui.core.errors import error_from_response

    body = {"error": {"code": code, "message": message}, "statusCode": status}
    request = httpx.Request("POST", "http://127.0.0.1/v1/usage/track")
    return error_from_response(httpx.Response(status, json=body, request=request))


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (APIConnectionError(), True),
        (APITimeoutError(), True),
        (PoolExhaustedError(), True),
        (_status_error(503, "SYS_UNAVAILABLE"), True),
        (_status_error(500, "SYS_INTERNAL_ERROR"), True),
        (_status_error(429, "RATE_LIMIT_EXCEEDED"), True),
        (_status_error(408, "TIMEOUT"), True),
        (_status_error(400, "VAL_INVALID_INPUT", "quota_exceeded"), False),
        (_status_error(400, "VAL_INVALID_INPUT", "Customer not found: c"), False),
        (_status_error(401, "AUTH_INVALID_TOKEN"), False),
        (_status_error(404, "RES_NOT_FOUND"), False),
        (InvalidInputError.single("quantity", "gt", "must be > 0"), False),
    ],
)
def test_is_retryable_failure(error: Exception, retryable: bool) -> None:
    """What the outbox takes: only failures that may pass later."""
    assert is_retryable_failure(error) is retryable


def test_the_size_bound_holds_without_counting_and_survives_settles(store: OutboxStore) -> None:
    """The bound is checked against a counter kept in the same transactions as the rows (no
    ``count(*)`` per add): after adds, deliveries, refusals and a settle repeated by a second
    worker whose lease ran out, it still admits exactly up to ``max_size``."""
    store.add([QueuedTrack(f"k{i}", "cus_a", "api_calls", 1.0) for i in range(5)], max_size=5)
    with pytest.raises(OutboxFullError):
        store.add([QueuedTrack("k5", "cus_a", "api_calls", 1.0)], max_size=5)
    done = Settlement(delivered=["k0", "k1"], failed=[("k2", "refused")])
    store.settle(done)
    store.settle(done)  # the same outcome again (another worker): not subtracted twice
    assert store.stats(0, 60).depth == 2
    added = [QueuedTrack(f"n{i}", "cus_a", "api_calls", 1.0) for i in range(3)]
    assert store.add(added, max_size=5) == 3
    with pytest.raises(OutboxFullError):
        store.add([QueuedTrack("n3", "cus_a", "api_calls", 1.0)], max_size=5)


def test_a_file_made_before_the_counter_gets_it_counted(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "outbox.db"
    SQLiteOutboxStore(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    db.executemany(
        "INSERT INTO outbox (idempotency_key, customer_id, feature_key, quantity, created_at, "
        "available_at) VALUES (?, 'cus_a', 'api_calls', 1, 0, 0)",
        [("old1",), ("old2",)],
    )
    db.execute("DELETE FROM outbox_counters WHERE name = 'pending'")  # as an older release
    db.close()
    store = SQLiteOutboxStore(path)
    try:
        with pytest.raises(OutboxFullError):
            store.add([QueuedTrack(f"k{i}", "cus_a", "api_calls", 1.0) for i in range(2)], 3)
        assert store.add([QueuedTrack("k", "cus_a", "api_calls", 1.0)], max_size=3) == 1
    finally:
        store.close()


def test_pending_quantities_per_feature_of_one_customer(store: OutboxStore) -> None:
    outbox = Outbox(store)
    outbox.put("cus_a", "api_calls", 2, idempotency_key="a1")
    outbox.put("cus_a", "api_calls", 3, idempotency_key="a2")
    outbox.put("cus_a", "ai_tokens", 100, idempotency_key="a3")
    outbox.put("cus_b", "api_calls", 7, idempotency_key="b1")
    assert outbox.pending_for("cus_a") == {"api_calls": 5.0, "ai_tokens": 100.0}
    store.settle(Settlement(delivered=["a1"], failed=[("a3", "refused")]))
    assert outbox.pending_for("cus_a") == {"api_calls": 3.0}
    assert outbox.pending_for("cus_nobody") == {}


def test_concurrent_adds_and_reads_on_one_store(store: OutboxStore) -> None:
    """Threads queueing while others read stats (the PostgreSQL store takes a pooled
    connection per call): every add lands, the bound holds, nothing deadlocks."""
    errors: list[BaseException] = []

    def add(worker: int) -> None:
        try:
            for i in range(25):
                entry = QueuedTrack(f"w{worker}-{i}", "cus_a", "api_calls", 1.0)
                store.add([entry], max_size=100)
                store.stats(0, 60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert store.stats(0, 60).depth == 100
    with pytest.raises(OutboxFullError):
        store.add([QueuedTrack("one-more", "cus_a", "api_calls", 1.0)], max_size=100)
