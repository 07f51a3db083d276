"""The local billing server killed with ``kill -9`` in the middle of a batch ingest (4,000
events in batches of 1,000 from two clients; the benchmark ``bench.crash_ingest`` does
100,000), then restarted on the same database, on both stores: no batch half applied, every
acknowledged batch kept, aggregates equal to the sums of the events, every idempotency key
with its event; and once every batch is sent again with its keys, each event is there once.
Real processes, a real SIGKILL, the database read directly."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.crash_ingest import BATCH, broken_invariants, crash_and_recover

EVENTS = 4_000


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_sigkill_in_the_middle_of_a_batch_ingest_leaves_no_batch_half_applied(
    request: pytest.FixtureRequest, kind: str, tmp_path: Path
) -> None:
    if kind == "postgres":
        database = request.getfixturevalue("postgres_cluster").create_database("crash")
    else:
        database = str(tmp_path / "billing.db")
    found = crash_and_recover(database, EVENTS)
    assert found["in_flight_at_kill"] >= 1, found  # the kill did land mid-ingest
    assert 0 < found["after_crash"]["events"] < EVENTS, found
    assert found["after_crash"]["events"] % BATCH == 0, found
    assert broken_invariants(found) == []
    assert found["final"]["events"] == found["final"]["distinct_keys"] == EVENTS
