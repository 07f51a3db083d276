"""Group commit (billing_ui.server.group_commit): one-event tracks queued together are written
in one transaction, and each request still gets exactly the answer it would get alone.

The groups are formed deterministically: ``asyncio.gather`` starts every request before the
writer task first runs, so all of them are queued when it does. Both stores, real databases.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from billing_ui.server.clock import ManualClock
from billing_ui.server.errors import ApiProblem
from billing_ui.server.group_commit import GroupCommit
from billing_ui.server.plans import load_plans
from billing_ui.server.service import BillingService, TrackCommand, Tracked
from billing_ui.server.sqlite_store import SqliteStore
from billing_ui.server.store import StoreBusyError, TrackItem, TrackOutcome, UsageStore, open_store
from billing_ui.server.testing import count_events

from .conftest import T0


@pytest.fixture
def location(database: dict[str, Any]) -> str:
    return str(database.get("database_url") or database["db_path"])


@pytest.fixture
def store(location: str) -> Iterator[UsageStore]:
    s = open_store(location)
    yield s
    s.close()


def _service(store: UsageStore) -> BillingService:
    service = BillingService(store, load_plans(None), ManualClock(T0))
    service.upsert_customer("pro_1", ["pro"], None)
    service.upsert_customer("free_1", ["free"], None)  # seats: 3, hard
    return service


async def _gather(writer: GroupCommit, cmds: Sequence[TrackCommand]) -> list[Any]:
    return await asyncio.gather(*(writer.record(c, {}) for c in cmds), return_exceptions=True)


def test_a_group_answers_each_event_as_if_alone(store: UsageStore, location: str) -> None:
    writer = GroupCommit(_service(store))
    cmds = [
        TrackCommand("pro_1", "api_calls", 2, "k1"),
        TrackCommand("free_1", "seats", 2, "s1"),
        TrackCommand("nobody", "api_calls", 1, "n1"),  # unknown customer: refused alone
        TrackCommand("free_1", "seats", 2, "s2"),  # 2 + 2 > 3, hard: refused, alone
        TrackCommand("pro_1", "api_calls", 2, "k1"),  # the same key: replays the first
        TrackCommand("pro_1", "no_such_feature", 1),  # 404, alone
        TrackCommand("free_1", "seats", 1, "s3"),  # fits: 3 of 3
    ]
    answers = asyncio.run(_gather(writer, cmds))
    assert (writer.groups, writer.events) == (1, len(cmds))  # one transaction for all
    assert writer.write_cpu_s > 0  # its write's CPU, for /metrics
    first, seat, unknown, over, replay, no_feature, last_seat = answers
    assert isinstance(first, Tracked) and first.data["duplicate"] is False
    assert first.data["usage"]["consumed_units"] == 2
    assert isinstance(seat, Tracked) and seat.data["usage"]["consumed_units"] == 2
    assert isinstance(unknown, ApiProblem) and unknown.message == "Customer not found: nobody"
    assert isinstance(over, ApiProblem) and over.status == 400
    assert over.message == "quota_exceeded" and over.details["consumed"] == 2
    assert isinstance(replay, Tracked) and replay.data["duplicate"] is True
    assert replay.data["recorded_at"] == first.data["recorded_at"]
    assert isinstance(no_feature, ApiProblem) and no_feature.status == 404
    assert isinstance(last_seat, Tracked) and last_seat.data["usage"]["consumed_units"] == 3
    # committed before any answer: what was recorded is in the database, and nothing else
    assert count_events(location, "pro_1") == 1
    assert count_events(location, "free_1") == 2
    # a key replayed across groups still gives the original answer
    (again,) = asyncio.run(_gather(writer, [TrackCommand("pro_1", "api_calls", 2, "k1")]))
    assert again.data["duplicate"] is True
    assert again.data["recorded_at"] == first.data["recorded_at"]
    assert count_events(location, "pro_1") == 1


def test_tracks_arriving_on_the_next_loop_turns_join_the_group(store: UsageStore) -> None:
    """The writer lets the loop turn while each turn brings more tracks: a track that
    arrives one turn after the first, and one two turns after, are written with it in one
    transaction (without that, the writer's first step wrote the first one alone). A turn
    that brings nothing ends the gathering: a track arriving after that forms a new group."""
    writer = GroupCommit(_service(store))

    async def staggered() -> list[Tracked]:
        tasks = []
        for n in range(3):  # one new track per loop turn
            cmd = TrackCommand("pro_1", "api_calls", 1, f"turn{n}")
            tasks.append(asyncio.ensure_future(writer.record(cmd, {})))
            await asyncio.sleep(0)
        first = await asyncio.gather(*tasks)
        later = await writer.record(TrackCommand("pro_1", "api_calls", 1, "later"), {})
        return [*first, later]

    answers = asyncio.run(staggered())
    assert [a.data["idempotency_key"] for a in answers] == ["turn0", "turn1", "turn2", "later"]
    assert (writer.groups, writer.events) == (2, 4)


class _FailsGroups:
    """A fault a real database cannot produce on demand (a fake, on purpose): the store's
    write fails whenever it is asked for more than one event at once, as a transaction
    that fails because of one of its events would. Everything else is the real store."""

    def __init__(self, real: UsageStore) -> None:
        self._real = real
        self.inline_reads = False  # every group through track_many
        self.failed = 0

    def track_many(
        self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
    ) -> list[TrackOutcome]:
        if len(items) > 1:
            self.failed += 1
            raise RuntimeError("injected: the group's transaction failed")
        return self._real.track_many(items, now_us, key_cutoff_us)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_failed_group_is_written_event_by_event(store: UsageStore, location: str) -> None:
    service = _service(store)
    faulty = _FailsGroups(store)
    service.store = faulty  # type: ignore[assignment]
    writer = GroupCommit(service)
    cmds = [TrackCommand("pro_1", "api_calls", 1, f"g{i}") for i in range(5)]
    answers = asyncio.run(_gather(writer, cmds))
    assert faulty.failed == 1
    assert all(isinstance(a, Tracked) and a.data["duplicate"] is False for a in answers)
    assert sorted(a.data["usage"]["consumed_units"] for a in answers) == [1, 2, 3, 4, 5]
    assert count_events(location, "pro_1") == 5


def test_an_error_of_one_event_reaches_only_its_request(store: UsageStore) -> None:
    """When a lone event's own write fails, its request gets the error; the others of the
    group that failed with it are recorded."""
    service = _service(store)
    real = service.store

    class _FailsOne(_FailsGroups):
        def track_many(
            self, items: Sequence[TrackItem], now_us: int, key_cutoff_us: int
        ) -> list[TrackOutcome]:
            if any(i[3] == "poison" for i in items):  # (aggregate, micros, hour, key, ...)
                raise RuntimeError("injected: this event's write fails")
            return real.track_many(items, now_us, key_cutoff_us)

    service.store = _FailsOne(real)  # type: ignore[assignment]
    writer = GroupCommit(service)
    cmds = [TrackCommand("pro_1", "api_calls", 1, k) for k in ("a", "poison", "b")]
    a, poison, b = asyncio.run(_gather(writer, cmds))
    assert isinstance(poison, RuntimeError)
    assert isinstance(a, Tracked) and isinstance(b, Tracked)
    assert a.data["idempotency_key"] == "a" and b.data["idempotency_key"] == "b"


def test_a_writer_cancelled_with_its_loop_leaves_nothing_queued(store: UsageStore) -> None:
    """A loop that ends while tracks are queued (shutdown) cancels its requests' waits, and
    the next loop's tracks are written as usual (no future of the dead loop is left)."""
    writer = GroupCommit(_service(store))

    async def cancelled_early() -> None:
        tasks = [asyncio.ensure_future(writer.record(TrackCommand("pro_1", "api_calls", 1), {}))]
        await asyncio.sleep(0)  # the request is queued and the writer task created
        assert writer._writer is not None
        writer._writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[0]

    asyncio.run(cancelled_early())
    assert writer._queue == [] and writer._writer is None
    (after,) = asyncio.run(_gather(writer, [TrackCommand("pro_1", "api_calls", 1, "later")]))
    assert isinstance(after, Tracked) and after.data["idempotency_key"] == "later"


def test_a_busy_database_answers_the_whole_group_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process holding SQLite's write lock past the busy timeout is the database's
    state, not one event's: the group's requests all get the retryable busy error together,
    instead of each event being retried alone and waiting out the timeout again. Real SQLite:
    a second connection holds ``BEGIN IMMEDIATE`` (what another server process would do)."""
    path = tmp_path / "busy.db"
    store = SqliteStore(path, busy_timeout_s=0.2)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        writer = GroupCommit(_service(store))
        holder.execute("BEGIN IMMEDIATE")
        cmds = [TrackCommand("pro_1", "api_calls", 1, f"b{i}") for i in range(5)]
        with caplog.at_level(logging.WARNING, logger="billing_ui.server"):
            results = asyncio.run(_gather(writer, cmds))
        assert all(isinstance(r, StoreBusyError) for r in results), results
        assert not [r for r in caplog.records if "writing each alone" in r.getMessage()]
        holder.execute("ROLLBACK")
        assert count_events(str(path)) == 0  # nothing half written; the keys are still free
        assert isinstance(asyncio.run(_gather(writer, cmds[:1]))[0], Tracked)
        assert count_events(str(path)) == 1
    finally:
        holder.close()
        store.close()
