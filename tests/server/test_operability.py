"""The local server's operator endpoints over real HTTP: ``/healthz``, ``/readyz`` (which asks
the database: 503 when it is gone, on SQLite and on a PostgreSQL stopped with ``pg_ctl``), and
``/metrics`` (values that move by exactly what real requests did)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from billing_ui.server.testing import RunningServer, create_customer, running_server
from billing_ui.server.testing_postgres import TempPostgres
from tests.conftest import started_postgres


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` as {(sample name, sorted labels): value}."""
    response = httpx.get(f"{base_url}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_healthz_and_readyz_answer_with_a_database(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.base_url}/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_readyz_is_503_when_the_sqlite_store_is_gone(tmp_path: Path) -> None:
    with running_server(db_path=tmp_path / "b.db") as srv:
        assert httpx.get(f"{srv.base_url}/readyz").status_code == 200
        srv.store.close()  # every connection closed: no query can be answered
        ready = httpx.get(f"{srv.base_url}/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["code"] == "SYS_DATABASE_UNAVAILABLE"
        assert httpx.get(f"{srv.base_url}/healthz").status_code == 200  # alive, not ready


@pytest.fixture
def own_cluster() -> Iterator[TempPostgres]:
    """A PostgreSQL cluster of this test's own: it is stopped and started again."""
    yield from started_postgres()


def test_readyz_follows_postgresql_stopped_and_started(own_cluster: TempPostgres) -> None:
    with running_server(database_url=own_cluster.create_database()) as srv:
        assert httpx.get(f"{srv.base_url}/readyz").status_code == 200
        own_cluster.halt()  # pg_ctl stop -m fast
        started = time.monotonic()
        ready = httpx.get(f"{srv.base_url}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert time.monotonic() - started < 5  # bounded, not the pool's 10 s wait
        assert httpx.get(f"{srv.base_url}/healthz").status_code == 200
        own_cluster.resume()
        deadline = time.monotonic() + 30
        while httpx.get(f"{srv.base_url}/readyz", timeout=10).status_code != 200:
            assert time.monotonic() < deadline, "not ready 30 s after PostgreSQL came back"
            time.sleep(0.2)  # polling a condition, with the deadline above


def test_metrics_move_with_real_requests(server: RunningServer) -> None:
    cid = create_customer(server, ["pro"])
    before = scrape(server.base_url)
    key = f"k-{uuid.uuid4().hex}"
    with server.client() as api:
        for _ in range(2):  # once recorded, once a replay
            body = {
                "customer_id": cid,
                "feature_key": "api_calls",
                "quantity": 1,
                "idempotency_key": key,
            }
            assert api.post("/v1/usage/track", json=body).status_code == 200
        refused = {"customer_id": cid, "feature_key": "no_such_feature", "quantity": 1}
        assert api.post("/v1/usage/track", json=refused).status_code >= 400
        batch = [
            {"customer_id": cid, "feature_key": "api_calls", "quantity": 1, "idempotency_key": k}
            for k in (f"b1-{key}", f"b2-{key}", key)
        ]
        assert api.post("/v1/usage/track-batch", json={"events": batch}).status_code == 200
    after = scrape(server.base_url)

    def moved(name: str, **labels: str) -> float:
        k = (name, tuple(sorted(labels.items())))
        return after.get(k, 0.0) - before.get(k, 0.0)

    assert moved("billing_server_tracks_total", result="recorded") == 3
    assert moved("billing_server_tracks_total", result="duplicate") == 2
    assert moved("billing_server_tracks_total", result="refused") == 1
    count = "billing_server_request_seconds_count"
    assert moved(count, operation="track_usage", outcome="2xx") == 2
    assert moved(count, operation="track_usage", outcome="4xx") == 1
    assert moved(count, operation="track_usage_batch", outcome="2xx") == 1


def test_group_commit_counters_move_with_real_tracks(server: RunningServer) -> None:
    """Each one-event track is decided in a group-commit transaction: the counters say how
    many transactions and events, and the CPU their writes took (``bench/http_ceiling.py``
    reads them to split the server's CPU per request)."""
    cid = create_customer(server, ["pro"])
    before = scrape(server.base_url)
    with server.client() as api:
        for i in range(3):  # one at a time: each its own transaction
            body = {"customer_id": cid, "feature_key": "api_calls", "quantity": 1,
                    "idempotency_key": f"g-{i}-{uuid.uuid4().hex}"}  # fmt: skip
            assert api.post("/v1/usage/track", json=body).status_code == 200
        batch = {"events": [{"customer_id": cid, "feature_key": "api_calls", "quantity": 1,
                             "idempotency_key": f"gb-{uuid.uuid4().hex}"}]}  # fmt: skip
        assert api.post("/v1/usage/track-batch", json=batch).status_code == 200  # not grouped
    after = scrape(server.base_url)

    def moved(name: str) -> float:
        return after[(name, ())] - before.get((name, ()), 0.0)

    assert moved("billing_server_group_commits_total") == 3
    assert moved("billing_server_group_commit_events_total") == 3
    assert moved("billing_server_group_commit_cpu_seconds_total") > 0
