"""What the server benchmarks share: ``python -m billing_ui.server`` in its own process, started
the way a user would (its URL known as soon as uvicorn says it is listening, no polling), and
fresh databases of either store."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from billing_ui.server.store import open_store
from billing_ui.server.testing_postgres import temp_postgres

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def server_process(database: str | Path, *extra: str) -> Iterator[str]:
    """Yield the base URL of a server on ``database`` (a SQLite file or a PostgreSQL URL; no
    seed, no rate limit, no access log)."""
    where = "--database-url" if str(database).startswith("postgres") else "--db"
    cmd = [
        "-m", "billing_ui.server", "--port", "0", where, str(database),
        "--no-seed", "--rate-limit-per-minute", "0", "--no-access-log", *extra,
    ]  # fmt: skip
    with uvicorn_process(*cmd) as served:
        yield served.url


@dataclass(frozen=True)
class Served:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the serving process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def uvicorn_process(*args: str) -> Iterator[Served]:
    """Run ``python *args`` (a program serving with uvicorn on port 0) and yield its base URL
    and pid once uvicorn says it is listening; terminate it on exit."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, *args], env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    url = None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "Uvicorn running on" in line:
            url = line.split("running on ")[1].split()[0]
            break
    if url is None:
        proc.wait()
        raise RuntimeError(f"{args} did not start:\n" + "".join(lines))
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield Served(url, proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


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
    with temp_postgres(durable=True) as cluster:

        def new_database() -> str:
            url = cluster.create_database("bench")
            open_store(url).close()
            return url

        yield new_database
