"""A throwaway PostgreSQL cluster whose test process was killed (``timeout`` sends SIGKILL
after SIGTERM, so no ``finally`` runs) is stopped by the next cluster start, and a cluster
whose owner still runs is left alone.

Real processes: a child Python process starts a real cluster with Debian's PostgreSQL, prints
its directory and is then killed with SIGKILL; the reaper must find that cluster's postmaster
and stop it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from billing_ui.server.testing_postgres import TempPostgres, reap_orphans
from tests.conftest import started_postgres

CHILD = """
import sys, time
from billing_ui.server.testing_postgres import TempPostgres
cluster = TempPostgres()
cluster.start()
print(cluster.dir, flush=True)
time.sleep(600)
"""


@pytest.fixture
def own_cluster() -> Iterator[TempPostgres]:
    yield from started_postgres()


def postmaster_of(cluster: Path) -> int:
    return int((cluster / "data" / "postmaster.pid").read_text().split()[0])


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_killed_owners_cluster_is_stopped_and_a_live_owners_is_not(
    own_cluster: TempPostgres,
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert child.stdout is not None
        orphan = Path(child.stdout.readline().strip())
        postmaster = postmaster_of(orphan)
        assert running(postmaster)
    finally:
        os.killpg(child.pid, signal.SIGKILL)  # as `timeout -s KILL` would: no cleanup runs
        child.wait(10)
    assert running(postmaster), "the cluster outlives its killed owner (what the reaper is for)"

    reaped = reap_orphans()

    assert orphan in reaped
    deadline = time.monotonic() + 10
    while running(postmaster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(postmaster)
    assert not orphan.exists()
    # This process's own cluster (its owner is alive) still serves.
    assert own_cluster.dir not in reaped
    assert running(postmaster_of(own_cluster.dir))
