"""The outbox's stores, each test run on both: a SQLite file and a table in a real PostgreSQL
(the session's throwaway cluster, ``postgres_cluster`` in tests/conftest.py; a fresh database
per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from billing_ui.core.outbox import OutboxStore

OpenStore = Callable[[], OutboxStore]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenStore]:
    """``open_store()``: a new connection to this test's one outbox (call it twice for two
    workers sharing it); every store opened is closed afterwards."""
    opened: list[OutboxStore] = []
    if request.param == "sqlite":
        from billing_ui.core.outbox_sqlite import SQLiteOutboxStore

        path = tmp_path / "outbox.db"

        def make() -> OutboxStore:
            opened.append(SQLiteOutboxStore(path))
            return opened[-1]
    else:
        from billing_ui.core.outbox_postgres import PostgresOutboxStore

        cluster = request.getfixturevalue("postgres_cluster")
        url = cluster.create_database("outbox")

        def make() -> OutboxStore:
            opened.append(PostgresOutboxStore(url))
            return opened[-1]

    yield make
    for store in opened:
        store.close()
    if request.param == "postgres":
        cluster.drop_database(url)


@pytest.fixture
def store(open_store: OpenStore) -> OutboxStore:
    return open_store()
