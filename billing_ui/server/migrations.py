"""The database schema as one ordered list of steps, so an old database is upgraded in place.

A database records the last step applied in ``meta.schema_version`` (the table and row the
first release already wrote, so a database made by it reads as version 1). Opening a store
applies the missing steps in order, in one write transaction with the version bump, so a crash
leaves either the old schema or the new one and two processes starting together apply each
step once (SQLite: the file's write lock; PostgreSQL: an advisory lock). A database from a
newer release (a version above :data:`LATEST`) is refused rather than guessed at. A process
first reads the version without any lock (:func:`is_current`) and takes the lock only when a
step is missing: every start but the first after an upgrade, a server process (or worker)
started next to running ones neither queues behind their writes for SQLite's write lock nor
serialises on the advisory lock.

Each step is written once per dialect: SQLite keeps ``WITHOUT ROWID`` tables (one B-tree per
keyed table) and rowid keys, PostgreSQL uses identity columns. Everything the shared queries
touch (``usage_sql.py``) has the same names and meaning in both.

To change the schema, append a step; never edit one that has shipped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from billing_ui.server.store import MAX_CONSUMED_MICROS, StoreError

Dialect = Literal["sqlite", "postgres"]

META_TABLE: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
)"""
READ_VERSION: Final = "SELECT value FROM meta WHERE key = 'schema_version'"
HAS_META: Final = {
    "sqlite": "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
    "postgres": "SELECT 1 WHERE to_regclass('meta') IS NOT NULL",
}
"""Whether the version table exists, asked without an error when it does not (a failed
statement would abort PostgreSQL's transaction and log an ERROR on every first start)."""
WRITE_VERSION: Final = """
INSERT INTO meta (key, value) VALUES ('schema_version', ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value"""


@dataclass(frozen=True, slots=True)
class Step:
    version: int
    why: str
    sqlite: tuple[str, ...]
    postgres: tuple[str, ...]

    def statements(self, dialect: Dialect) -> tuple[str, ...]:
        return self.sqlite if dialect == "sqlite" else self.postgres


def _tables(pk: str, fk: str, without_rowid: str) -> tuple[str, ...]:
    """Version 1, the first release's tables, in either dialect's key spelling."""
    return (
        f"""CREATE TABLE IF NOT EXISTS customers (
            id            {pk},
            external_id   TEXT    NOT NULL UNIQUE,
            created_at_us BIGINT  NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS subscriptions (
            customer_id   {fk} NOT NULL REFERENCES customers (id),
            product_key   TEXT    NOT NULL,
            status        TEXT    NOT NULL,
            position      INTEGER NOT NULL,
            granted_at_us BIGINT  NOT NULL,
            PRIMARY KEY (customer_id, product_key)
        ){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS usage_events (
            id              {pk},
            customer_id     {fk} NOT NULL REFERENCES customers (id),
            feature_key     TEXT    NOT NULL,
            quantity_micros BIGINT  NOT NULL CHECK (quantity_micros > 0),
            recorded_at_us  BIGINT  NOT NULL,
            idempotency_key TEXT,
            metadata        TEXT
        )""",
        f"""CREATE TABLE IF NOT EXISTS usage_aggregates (
            customer_id     {fk} NOT NULL REFERENCES customers (id),
            feature_key     TEXT    NOT NULL,
            period_start_us BIGINT  NOT NULL,
            period_end_us   BIGINT  NOT NULL,
            consumed_micros BIGINT  NOT NULL
                CHECK (consumed_micros BETWEEN 0 AND {MAX_CONSUMED_MICROS}),
            event_count     BIGINT  NOT NULL,
            updated_at_us   BIGINT  NOT NULL,
            PRIMARY KEY (customer_id, feature_key, period_start_us, period_end_us)
        ){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS usage_hourly (
            customer_id     {fk} NOT NULL REFERENCES customers (id),
            feature_key     TEXT    NOT NULL,
            hour_start_us   BIGINT  NOT NULL,
            quantity_micros BIGINT  NOT NULL
                CHECK (quantity_micros BETWEEN 0 AND {MAX_CONSUMED_MICROS}),
            event_count     BIGINT  NOT NULL,
            PRIMARY KEY (customer_id, feature_key, hour_start_us)
        ){without_rowid}""",
        f"""CREATE TABLE IF NOT EXISTS idempotency_keys (
            customer_id     {fk} NOT NULL REFERENCES customers (id),
            idempotency_key TEXT    NOT NULL,
            feature_key     TEXT    NOT NULL,
            quantity_micros BIGINT  NOT NULL,
            recorded_at_us  BIGINT  NOT NULL,
            PRIMARY KEY (customer_id, idempotency_key)
        ){without_rowid}""",
        """CREATE TABLE IF NOT EXISTS revoked_tokens (
            jti           TEXT   PRIMARY KEY,
            revoked_at_us BIGINT NOT NULL
        )""",
    )


_EXPIRY_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS idempotency_keys_by_age ON idempotency_keys (recorded_at_us)",
    "CREATE INDEX IF NOT EXISTS revoked_tokens_by_age ON revoked_tokens (revoked_at_us)",
)

STEPS: Final = (
    Step(
        1,
        "the first release's tables",
        sqlite=_tables("INTEGER PRIMARY KEY", "INTEGER", " WITHOUT ROWID"),
        postgres=_tables("BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "BIGINT", ""),
    ),
    Step(
        2,
        "hourly pruning of expired keys and revocations reads an index, not the whole table",
        sqlite=_EXPIRY_INDEXES,
        postgres=_EXPIRY_INDEXES,
    ),
)
LATEST: Final = STEPS[-1].version


def is_current(dialect: Dialect, one: Callable[[str], Sequence[object] | None]) -> bool:
    """Whether the schema is at :data:`LATEST`, read through ``one`` (a query returning one
    row or ``None``) outside any transaction or lock. ``False`` means "take the lock and
    look again": a newer version is refused, and a missing step applied, by :func:`migrate`
    under the lock, where the version is read again (another process may have just done it).
    """
    if one(HAS_META[dialect]) is None:
        return False
    row = one(READ_VERSION)
    return row is not None and str(row[0]) == str(LATEST)


def migrate(
    dialect: Dialect,
    current: int,
    execute: Callable[[str, tuple[object, ...]], object],
    where: str,
) -> int:
    """Apply every step after ``current`` through ``execute`` (inside the caller's write
    transaction, after :data:`META_TABLE`) and record the new version; returns it.
    ``where`` names the database in the error for a newer schema."""
    if current > LATEST:
        raise StoreError(
            f"{where} has schema version {current}, this server knows up to {LATEST}: "
            "it was written by a newer billing_ui; upgrade billing_ui or use another database"
        )
    for step in STEPS:
        if step.version > current:
            for statement in step.statements(dialect):
                execute(statement, ())
    if current != LATEST:
        execute(WRITE_VERSION, (str(LATEST),))
    return LATEST
