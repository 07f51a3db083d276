"""A throwaway PostgreSQL cluster for tests and benchmarks: ``with temp_postgres() as pg:``.

It runs Debian's own ``initdb`` / ``pg_ctl`` (package ``postgresql``, binaries in
``/usr/lib/postgresql/<version>/bin``) on a free loopback port, in a temporary directory that
is deleted afterwards; nothing is downloaded and no system cluster is touched. PostgreSQL
refuses to run as root, and tests and CI here run as root: then every server command runs as
the ``postgres`` system user the package creates (``runuser -u postgres``), in a directory it
owns. Connections use a random password (SCRAM) over TCP.

``durable=False`` (tests) turns off fsync: a crash loses the cluster, which is thrown away
anyway. Benchmarks keep fsync and turn off only ``synchronous_commit``, which is what SQLite's
``synchronous = NORMAL`` in WAL mode also gives up (the last commits on power loss, never
consistency).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

ENV_PG_BIN = "BILLING_UI_PG_BIN"
"""Directory holding ``initdb`` and ``pg_ctl``, when not Debian's default location."""
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's ``postgresql``)."""


def find_bin_dir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` are: $BILLING_UI_PG_BIN, Debian's newest
    ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    candidates = [os.environ.get(ENV_PG_BIN, "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for candidate in candidates:
        if candidate and all((Path(candidate) / b).is_file() for b in ("initdb", "pg_ctl")):
            return Path(candidate)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql "
        f"package (scripts/bootstrap.sh does), or set ${ENV_PG_BIN}"
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


PREFIX = "billing-ui-pg-"
OWNER_FILE = "owner"
"""In a cluster's directory: ``<pid> <start time>`` of the process that started it, so that a
later run can tell an orphan (its owner killed, e.g. by ``timeout``, before it could stop the
cluster) from a cluster still in use. The start time (``/proc/<pid>/stat`` field 22) guards
against a reused pid."""


def _started_at(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot, or None if it is gone (or
    a zombie: exited, not yet reaped by its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # from field 3; the name in (...) may hold spaces
    return None if fields[0] == "Z" else fields[19]


def _orphan_postmaster(cluster: Path) -> int | None:
    """The postmaster pid of ``cluster`` (a directory made by TempPostgres) if its owner is
    gone and the postmaster still runs that cluster's data directory; otherwise None."""
    try:
        pid, started = (cluster / OWNER_FILE).read_text().split()
        postmaster = int((cluster / "data" / "postmaster.pid").read_text().split()[0])
        cmdline = Path(f"/proc/{postmaster}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None  # not ours, not started, or already stopped
    if _started_at(int(pid)) == started:
        return None  # its owner still runs
    if str(cluster / "data").encode() not in cmdline:
        return None  # the pid now belongs to another process
    return postmaster


def reap_orphans(wait_s: float = 10.0) -> list[Path]:
    """Stop the throwaway clusters whose owning process died without stopping them, and
    delete their directories; return those directories.

    Cheap (a directory listing and a few small reads), so it runs before every cluster start.
    A postmaster gets SIGINT, PostgreSQL's "fast" shutdown, which is what ``pg_ctl stop -m
    fast`` sends; ``pg_ctl`` itself refuses to run as root, and a signal needs no ``runuser``.
    Clusters without an owner file (another tool's, or an older version's) are left alone."""
    reaped: dict[Path, int] = {}
    for name in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        cluster = Path(name)
        postmaster = _orphan_postmaster(cluster)
        if postmaster is None:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(postmaster, signal.SIGINT)
            reaped[cluster] = postmaster
    deadline = time.monotonic() + wait_s
    for cluster, postmaster in reaped.items():
        while _started_at(postmaster) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if _started_at(postmaster) is None:
            shutil.rmtree(cluster, ignore_errors=True)
    return list(reaped)


class TempPostgres:
    """One running throwaway cluster; :meth:`create_database` hands out fresh databases."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = find_bin_dir()
        self.durable = durable
        self.password = secrets.token_hex(16)
        self.port = 0
        self._as_postgres: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user to run PostgreSQL as"
                ) from None
            self._owner = (user.pw_uid, user.pw_gid)
            self._as_postgres = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        self.data = self.dir / "data"
        self._admin: psycopg.Connection[tuple[object, ...]] | None = None

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            [*self._as_postgres, *args], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({out.returncode}):\n{out.stderr}\n{tail}")

    def start(self) -> None:
        reap_orphans()
        me = os.getpid()
        (self.dir / OWNER_FILE).write_text(f"{me} {_started_at(me)}\n")
        if self._owner is not None:
            os.chown(self.dir, *self._owner)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._owner is not None:
            os.chown(pwfile, *self._owner)
        self._run(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
            f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--no-locale",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        pwfile.unlink()
        for attempt in range(3):  # the free port may be taken between asking and binding
            self.port = _free_port()
            try:
                self._pg_ctl_start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise

    def _pg_ctl_start(self) -> None:
        settings = ["-c synchronous_commit=off", "-c max_connections=300"]
        if not self.durable:
            settings += ["-c fsync=off", "-c full_page_writes=off"]
        options = f"-h 127.0.0.1 -p {self.port} -k {self.dir} " + " ".join(settings)
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
            str(self.dir / "server.log"), "-w", "-t", str(START_TIMEOUT_S),
            "-o", options, "start",
        )  # fmt: skip

    def halt(self) -> None:
        """Stop the server and keep its data (an outage; :meth:`resume` ends it)."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the halted server again, on the same port."""
        self._pg_ctl_start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        if self._admin is None:
            self._admin = psycopg.connect(self.url(), autocommit=True)
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self._admin.execute(f'CREATE DATABASE "{name}"')  # name is ours: [a-z0-9_]
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by :meth:`create_database` (its connections are ended):
        each is a copy of the template (~8 MB), so a long session drops what it is done
        with instead of filling the disk."""
        name = url.rsplit("/", 1)[1]
        if self._admin is not None and name.replace("_", "").isalnum():
            self._admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (immediately: its data is thrown away) and delete its directory."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")  # fmt: skip
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def temp_postgres(*, durable: bool = False) -> Iterator[TempPostgres]:
    """A started :class:`TempPostgres`, stopped and deleted when the block ends."""
    cluster = TempPostgres(durable=durable)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
