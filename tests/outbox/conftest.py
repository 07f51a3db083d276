"""The outbox's stores, each test run on both: a SQLite file and a table in a real PostgreSQL
(the session's throwaway cluster, ``postgres_cluster`` in tests/conftest.py; a fresh database
per test)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from billing_ui.core.outbox import OutboxStore

OpenStore = Callable[[], OutboxStore]


def open_outbox_store(location: str) -> OutboxStore:
    """A store on ``location``: a ``postgresql://`` URL, else a SQLite file's path."""
    if location.startswith("postgresql://"):
        from billing_ui.core.outbox_postgres import PostgresOutboxStore

        return PostgresOutboxStore(location)
    from billing_ui.core.outbox_sqlite import SQLiteOutboxStore

    return SQLiteOutboxStore(location)


@pytest.fixture(params=["sqlite", "postgres"])
def outbox_location(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Where this test's one outbox lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield str(tmp_path / "outbox.db")
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url: str = cluster.create_database("outbox")
    yield url
    cluster.drop_database(url)


@pytest.fixture
def open_store(outbox_location: str) -> Iterator[OpenStore]:
    """``open_store()``: a new connection to this test's one outbox (call it twice for two
    workers sharing it); every store opened is closed afterwards."""
    opened: list[OutboxStore] = []

    def make() -> OutboxStore:
        opened.append(open_outbox_store(outbox_location))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: OpenStore) -> OutboxStore:
    return open_store()
