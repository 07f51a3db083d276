"""Data kept across restarts, idempotent seeding, and the command-line entry point."""

from __future__ import annotations

import base64
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.plans import load_plans
from billing_ui.server.sqlite_store import SqliteStore
from billing_ui.server.store import StoreError, open_store
from billing_ui.server.testing import (
    count_events,
    create_customer,
    mint_session_token,
    running_server,
)

from .conftest import T0, metric, track

REPO = Path(__file__).resolve().parents[2]


def test_data_survives_a_restart(database):
    clock = ManualClock(T0)
    with running_server(**database, clock=clock) as srv, srv.client() as api:
        cid = create_customer(srv, ["free"])
        track(api, cid, "api_calls", 12, idempotency_key="once")
        track(api, cid, "seats", 3)
        token = mint_session_token(srv, cid)
        jti_token = mint_session_token(srv, cid)
        head = jti_token.rsplit(".", 1)[0].removeprefix("bos_session_test_")
        jti = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))["jti"]
        assert api.delete(f"/v1/session-tokens/{jti}").status_code == 200
    with running_server(**database, clock=clock) as srv, srv.client() as api:
        assert metric(api, cid, "api_calls")["consumed"] == 12
        assert track(api, cid, "api_calls", 12, idempotency_key="once").json()["duplicate"] is True
        assert track(api, cid, "seats", 1).status_code == 400  # the hard limit remembers
        ok = httpx.get(srv.base_url + "/v1/features/entitlements", headers=srv.auth(token))
        assert ok.status_code == 200  # tokens are stateless: still valid after a restart
        revoked = httpx.get(srv.base_url + "/v1/features/entitlements", headers=srv.auth(jti_token))
        assert revoked.status_code == 401  # ...and revocations are kept
        assert srv.count_events(cid) == 2


def test_seeding_is_idempotent_across_restarts(database):
    clock = ManualClock(T0)
    with running_server(**database, clock=clock, seed=True) as srv, srv.client() as api:
        first = srv.fingerprint()
        m = metric(api, "demo_free", "api_calls")
        assert m["consumed"] == 850 and m["percentage_used"] == 85  # an upgrade nudge to show
        assert metric(api, "demo_pro", "storage_gb")["consumed"] == 42.5
        history = api.get(
            "/v1/usage/history", params={"customer_id": "demo_pro", "feature_key": "api_calls"}
        ).json()["points"]
        assert sum(p["quantity"] > 0 for p in history) > 5  # spread over the month
        assert history[-1]["cumulative"] == 12345
        assert (
            api.get("/v1/usage/metrics", params={"customer_id": "demo_none"}).json()["metrics"]
            == []
        )
        api.put("/v1/customers/demo_none", json={"products": ["free"]})  # a change via the API
    for later in (timedelta(hours=1), timedelta(days=2)):  # same period; idempotency keys expired
        clock.advance(later)
        with running_server(**database, clock=clock, seed=True) as srv, srv.client() as api:
            assert metric(api, "demo_free", "api_calls")["consumed"] == 850
            assert srv.fingerprint()["usage_events.rows"] >= first["usage_events.rows"]
            # The change made through the API survived the re-seed.
            assert (
                len(
                    api.get("/v1/usage/metrics", params={"customer_id": "demo_none"}).json()[
                        "metrics"
                    ]
                )
                == 5
            )
    clock.set(T0.replace(month=4, day=2))  # a new month: monthly usage is seeded afresh
    with running_server(**database, clock=clock, seed=True) as srv, srv.client() as api:
        assert metric(api, "demo_free", "api_calls")["consumed"] == 850
        assert metric(api, "demo_free", "seats")["consumed"] == 2  # never-resetting: not again


def test_a_foreign_file_is_refused(tmp_path):
    bad = tmp_path / "not.db"
    bad.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreError):
        SqliteStore(bad)


def test_two_stores_on_one_database_share_idempotency(database):
    """A second process (here: a second store) on the same database still counts a key once
    (the test with real processes is test_processes.py)."""
    from billing_ui.server.service import BillingService, TrackCommand

    where = database.get("database_url") or database["db_path"]
    clock = ManualClock(T0)
    stores = [open_store(where), open_store(where)]
    try:
        services = [BillingService(s, load_plans(), clock) for s in stores]
        services[0].upsert_customer("c1", ["pro"], "active")
        barrier = threading.Barrier(2)
        results = []

        def run(service: BillingService) -> None:
            barrier.wait()
            cmd = TrackCommand("c1", "api_calls", 1, idempotency_key="shared")
            results.append(service.track(cmd).result.duplicate)

        threads = [threading.Thread(target=run, args=(s,)) for s in services]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False, True]
        assert count_events(str(where), "c1") == 1
    finally:
        for s in stores:
            s.close()


def test_command_line_serves_and_seeds(tmp_path, database):
    """SQLite through ``--db``; PostgreSQL through $BILLING_UI_DATABASE_URL (test_processes.py
    uses ``--database-url``)."""
    db = tmp_path / "cli.db"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BILLINGOS_SECRET_KEY": "sk_test_from_env"}
    if "database_url" in database:
        env["BILLING_UI_DATABASE_URL"] = database["database_url"]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "billing_ui.server",
            "--port",
            "0",
            "--db",
            str(db),
            "--plans",
            str(REPO / "billing_ui/server/plans.toml"),
            "--no-access-log",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    try:
        url = _wait_for_url(proc)
        with httpx.Client(
            base_url=url, headers={"Authorization": "Bearer sk_test_from_env"}
        ) as api:
            assert api.get("/health").json()["status"] == "ok"
            assert metric(api, "demo_free", "api_calls")["consumed"] == 850
        wrong = httpx.get(
            url + "/v1/usage/metrics?customer_id=demo_free",
            headers={"Authorization": "Bearer sk_test_billing_ui_local"},
        )
        assert wrong.status_code == 401
        assert count_events(database.get("database_url") or str(db)) > 0  # the seed's
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert db.exists() == ("db_path" in database)  # PostgreSQL's URL wins over --db


def _wait_for_url(proc: subprocess.Popen[str], timeout_s: float = 30.0) -> str:
    """The URL uvicorn prints once it listens; fails after ``timeout_s`` (waits on the
    server's output, never polls)."""
    assert proc.stderr is not None
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if "Uvicorn running on" in line:
            return line.split("running on ")[1].split()[0]
    raise AssertionError("the server did not start:\n" + "".join(seen))


def test_command_line_rejects_a_broken_plans_file(tmp_path):
    plans = tmp_path / "plans.toml"
    plans.write_text('[features.x]\ntype = "usage_quota"\nreset = "fortnight"\n[products]\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "billing_ui.server",
            "--db",
            str(tmp_path / "b.db"),
            "--plans",
            str(plans),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "features.x.reset" in out.stderr
