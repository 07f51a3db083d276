"""What the server benchmarks share: the billing server in its own process, started by the one
helper the tests use too (:func:`billing_ui.server.testing.server_process`: its URL known as
soon as uvicorn says it is listening, no polling), and fresh databases of either store."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from billing_ui.server import testing
from billing_ui.server.store import open_store
from billing_ui.server.testing import ServerProcess
from billing_ui.server.testing_postgres import temp_postgres

REPO = Path(__file__).resolve().parents[1]

Served = ServerProcess
"""A serving process: ``base_url``, ``pid``, ``cpu_seconds()``."""

SHARED_POSTGRES_ENV = "BILLING_UI_BENCH_POSTGRES"
"""Admin URL of a PostgreSQL cluster that a smoke run (``python -m bench --smoke``) started
once for all its benchmarks: each then takes fresh databases in it instead of running initdb
and a server of its own (seconds of CPU each, at a size where nothing is measured)."""


@contextmanager
def server_process(database: str | Path, *extra: str) -> Iterator[str]:
    """Yield the base URL of a server on ``database`` (a SQLite file or a PostgreSQL URL; no
    seed, no rate limit, no access log)."""
    with testing.server_process(db_path=database, extra_args=extra, seed=False) as served:
        yield served.base_url


@contextmanager
def uvicorn_process(*args: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run ``python *args`` (a program of bench/ serving with uvicorn on port 0), importable
    from the repo whatever the caller's working directory; ``env`` adds variables."""
    path = str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")
    env = {**os.environ, **(env or {}), "PYTHONPATH": path}
    with testing.uvicorn_process(args, env=env) as served:
        yield served


STORES = ("sqlite", "postgres")


@contextmanager
def databases(kind: str, folder: Path) -> Iterator[Callable[[], str]]:
    """A maker of fresh, migrated databases of ``kind``: SQLite files in ``folder``, or
    databases of one throwaway PostgreSQL cluster (Debian's ``postgresql``; fsync on,
    ``synchronous_commit`` off: the durability of SQLite's ``synchronous = NORMAL`` in WAL
    mode, which may lose the last commits on power loss but never consistency)."""
    if kind == "sqlite":

        def new_file() -> str:
            path = folder / f"bench-{time.monotonic_ns()}.db"
            open_store(path).close()  # created before several processes open it
            return str(path)

        yield new_file
        return
    shared = os.environ.get(SHARED_POSTGRES_ENV)
    if shared:
        with _shared_cluster(shared) as new_database:
            yield new_database
        return
    with temp_postgres(durable=True) as cluster:

        def new_database() -> str:
            url = cluster.create_database("bench")
            open_store(url).close()
            return url

        yield new_database


@contextmanager
def _shared_cluster(admin_url: str) -> Iterator[Callable[[], str]]:
    """Fresh, migrated databases in the cluster at ``admin_url``, dropped when the block ends
    (each is a copy of the template: a smoke run must not fill the disk)."""
    made: list[str] = []
    with psycopg.connect(admin_url, autocommit=True) as admin:

        def new_database() -> str:
            name = f"bench_{uuid.uuid4().hex[:12]}"  # ours: [a-z0-9_]
            admin.execute(f'CREATE DATABASE "{name}"')
            made.append(name)
            url = admin_url.rsplit("/", 1)[0] + "/" + name
            open_store(url).close()
            return url

        try:
            yield new_database
        finally:
            for name in made:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
