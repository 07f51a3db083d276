"""The psycopg connection pool, opened one way for both PostgreSQL users: the local server's
store (``server/postgres_store.py``) and the app's outbox (``core/outbox_postgres.py``).

Both want the same things of it, so they are said once here: connections in autocommit
(transactions are explicit, ``conn.transaction()``, so a read never holds one open), at least
one connection made before the constructor returns (a wrong URL fails at start, not at the
first track), and a bounded wait for a free connection. Needs the ``postgres`` extra.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
import psycopg_pool

__all__ = ["Pool", "open_pool"]

Pool = psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]]


def open_pool(
    url: str,
    *,
    name: str,
    max_size: int,
    wait_timeout_s: float,
    open_timeout_s: float,
    configure: Callable[[psycopg.Connection[Any]], None] | None = None,
) -> Pool:
    """An open pool of 1 to ``max_size`` autocommit connections to ``url``; ``configure`` runs
    on each new connection. A caller waits at most ``wait_timeout_s`` for a free connection
    (then ``psycopg_pool.PoolTimeout``). Raises ``PoolTimeout`` when no connection opens within
    ``open_timeout_s``; the pool is closed then."""
    pool: Pool = psycopg_pool.ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        kwargs={"autocommit": True},
        configure=configure,
        timeout=wait_timeout_s,
        open=False,
        name=name,
    )
    try:
        pool.open(wait=True, timeout=open_timeout_s)
    except BaseException:
        pool.close()
        raise
    return pool
