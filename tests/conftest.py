"""Fixtures shared by every test folder: a real local billing server over loopback HTTP.

* ``billing_server`` — a fresh server and database for one test (clock: a ManualClock at the
  current time, standing still unless the test moves it: ``billing_server.manual_clock``).
* ``shared_billing_server`` — one server for the whole session; isolate with fresh customers and
  leave its clock alone.
* ``fresh_customer`` — a new customer subscribed to ``pro`` on ``billing_server``.
* ``postgres_cluster`` — one throwaway PostgreSQL cluster for the session (Debian's
  ``postgresql``, on a free loopback port in a temporary directory); ``create_database()``
  gives each user a fresh database. Without PostgreSQL its tests are skipped locally and fail
  in CI (``CI=true``), where the bootstrap must have installed it.
* ``redis_url`` — one throwaway Redis server for the session (Debian's ``redis-server``), the
  same way.

More helpers (``create_customer``, ``mint_session_token``) are in billing_ui.server.testing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from billing_ui.server.testing import RunningServer
    from billing_ui.server.testing_postgres import TempPostgres


@pytest.fixture
def billing_server(tmp_path: Path) -> Iterator[RunningServer]:
    from billing_ui.server.testing import running_server

    with running_server(db_path=tmp_path / "billing.db") as server:
        yield server


@pytest.fixture(scope="session")
def shared_billing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    from billing_ui.server.testing import running_server

    with running_server(db_path=tmp_path_factory.mktemp("billing") / "billing.db") as server:
        yield server


@pytest.fixture
def fresh_customer(billing_server: RunningServer) -> str:
    from billing_ui.server.testing import create_customer

    return create_customer(billing_server, ["pro"])


def started_postgres() -> Iterator[TempPostgres]:
    """A started throwaway cluster, stopped afterwards; skipped without PostgreSQL locally,
    failed in CI (for a fixture of any scope: ``yield from started_postgres()``)."""
    from billing_ui.server.testing_postgres import PostgresUnavailable, TempPostgres

    try:
        cluster = TempPostgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test on PostgreSQL: {exc}", pytrace=False)
        pytest.skip(str(exc))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[TempPostgres]:
    yield from started_postgres()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One throwaway Redis server for the session (Debian's ``redis-server`` on a free loopback
    port, in a temporary directory). Isolate with a fresh namespace per test. Without
    redis-server its tests are skipped locally and fail in CI (``CI=true``)."""
    from billing_ui.core.testing_redis import RedisUnavailable, temp_redis

    try:
        with temp_redis() as url:
            yield url
    except RedisUnavailable as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test on Redis: {exc}", pytrace=False)
        pytest.skip(str(exc))
