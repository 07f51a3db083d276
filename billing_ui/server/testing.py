"""Run the real billing server inside a test: ``with running_server(db_path=...) as srv:``
(SQLite) or ``running_server(database_url="postgresql://...")``.

The server is uvicorn on 127.0.0.1, on a socket bound before it starts (so the port is known
and free), in a background thread. Start-up and shut-down wait on events, never on sleeps.
Tests talk to it over real loopback HTTP (``srv.base_url``), move its time (``srv.clock``) and
look straight into its database through a connection of their own (``srv.fingerprint()``,
``srv.count_events()``): what a test inspects is what was committed, not what the store says.
"""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx
import uvicorn

from billing_ui.core._constants import LOCAL_SECRET_KEY
from billing_ui.server.clock import Clock, ManualClock
from billing_ui.server.options import CorsPolicy, WireOptions
from billing_ui.server.plans import Plans, load_plans
from billing_ui.server.slow_requests import protocol_with_deadlines
from billing_ui.server.store import UsageStore, is_postgres_url, open_store

if TYPE_CHECKING:
    from fastapi import FastAPI

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


@dataclass
class RunningServer:
    """A live server: where it listens, its key, its clock and its database."""

    base_url: str
    api_key: str
    clock: Clock
    store: UsageStore
    app: FastAPI
    plans: Plans
    database: str
    """The SQLite file or the PostgreSQL URL (with its password) the server uses."""
    _headers: dict[str, str] = field(default_factory=dict, repr=False)

    def fingerprint(self) -> dict[str, int]:
        """Row counts and sums of every usage table: equal before and after a refused
        request, which is how tests prove that it changed nothing."""
        return fingerprint(self.database)

    def count_events(self, customer_id: str | None = None, feature_key: str | None = None) -> int:
        """How many raw events are stored (optionally for one customer and feature)."""
        return count_events(self.database, customer_id, feature_key)

    @property
    def manual_clock(self) -> ManualClock:
        """The clock as a :class:`ManualClock` (the default), to ``set``/``advance`` it."""
        if not isinstance(self.clock, ManualClock):
            raise TypeError("this server runs on a real clock")
        return self.clock

    def auth(self, credential: str | None = None) -> dict[str, str]:
        """``Authorization`` header for the secret key (or the given token)."""
        return {"Authorization": f"Bearer {credential or self.api_key}"}

    def client(self, credential: str | None = None, **kwargs: Any) -> httpx.Client:
        """A plain httpx client for this server, authenticated with the secret key (or the
        given session token)."""
        return httpx.Client(base_url=self.base_url, headers=self.auth(credential), **kwargs)


class _ThreadedServer(uvicorn.Server):
    """uvicorn that signals when it is up and stops as soon as it is told (no polling)."""

    def __init__(
        self, config: uvicorn.Config, on_stop: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        super().__init__(config)
        self._on_stop = on_stop
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()

    async def main_loop(self) -> None:
        assert self._stop is not None
        while not await self.on_tick(0):  # refreshes the Date header, honours should_exit
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=1.0)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's shutdown, without its fixed 0.1 s pause: by the time a test leaves the
        ``with`` block its requests have been answered, so idle connections are just closed."""
        for server in self.servers:
            server.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        for server in self.servers:
            await server.wait_closed()
        if not self.force_exit:
            await self.lifespan.shutdown()  # a no-op with lifespan="off"
        if self._on_stop is not None:
            await self._on_stop()

    def stop(self) -> None:
        self.should_exit = True
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)


@contextmanager
def running_server(
    *,
    db_path: str | Path | None = None,
    database_url: str | None = None,
    plans: Plans | str | Path | None = None,
    api_key: str = LOCAL_SECRET_KEY,
    clock: Clock | None = None,
    rate_limit_per_minute: int = 0,
    port: int = 0,
    seed: bool = False,
    options: WireOptions | None = None,
    cors: CorsPolicy | None = None,
) -> Iterator[RunningServer]:
    """Serve the billing API on ``127.0.0.1:port`` (0: a free port) until the block ends.

    The database is the SQLite file ``db_path`` or the PostgreSQL ``database_url`` (one of
    them). ``plans``: a :class:`Plans`, a path to a plans TOML, or ``None`` for the packaged sample.
    ``clock``: defaults to a :class:`ManualClock` at the current time, so time stands still
    unless the test moves it. ``seed``: create the plans' demo customers first.
    ``options``: departures from BillingOS (none by default). ``cors``: by default what the
    CLI allows on loopback (the developer's own origins).
    """
    catalogue = plans if isinstance(plans, Plans) else load_plans(plans)
    the_clock = clock if clock is not None else ManualClock()
    if (db_path is None) == (database_url is None):
        raise ValueError("give exactly one of db_path and database_url")
    database = str(database_url or db_path)
    store = open_store(database_url or Path(str(db_path)))
    # Imported here: a process that only starts server processes (every benchmark, many
    # tests) needs neither the app nor FastAPI (half a second of CPU to import).
    from billing_ui.server.app import create_app
    from billing_ui.server.seed import seed_demo_customers

    try:
        app = create_app(
            store=store,
            plans=catalogue,
            clock=the_clock,
            api_key=api_key,
            rate_limit_per_minute=rate_limit_per_minute,
            options=options,
            cors=cors if cors is not None else CorsPolicy.for_host("127.0.0.1", environ={}),
        )
        if seed:
            seed_demo_customers(app.state.service)
        with serve_asgi(
            app, port=port, http=protocol_with_deadlines(), on_stop=store.close_async
        ) as base_url:
            yield RunningServer(
                base_url=base_url,
                api_key=api_key,
                clock=the_clock,
                store=store,
                app=app,
                plans=catalogue,
                database=database,
            )
    finally:
        store.close()


@contextmanager
def serve_asgi(
    app: Any,
    *,
    port: int = 0,
    http: Any = "auto",
    lifespan: Literal["auto", "on", "off"] = "off",
    name: str = "billing-server",
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> Iterator[str]:
    """Serve any ASGI app with uvicorn on ``127.0.0.1:port`` (0: a free port) in a thread until
    the block ends; yields its base URL. ``lifespan="on"`` runs the app's startup/shutdown;
    ``on_stop`` runs on the server's loop as it stops (the store's connections of that loop)."""
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan=lifespan, http=http
        )
        server = _ThreadedServer(config, on_stop)
        failure: list[BaseException] = []

        def serve() -> None:
            try:
                server.run(sockets=[sock])
            except BaseException as exc:  # includes uvicorn's SystemExit on start-up failure
                failure.append(exc)
            finally:
                server.ready.set()

        thread = threading.Thread(target=serve, name=name, daemon=True)
        thread.start()
        if not server.ready.wait(START_TIMEOUT_S) or not server.started:
            server.stop()
            thread.join(STOP_TIMEOUT_S)
            raise RuntimeError(f"{name} did not start: {failure or 'timeout'}")
        host, bound_port = sock.getsockname()[:2]
        try:
            yield f"http://{host}:{bound_port}"
        finally:
            server.stop()
            thread.join(STOP_TIMEOUT_S)
            if thread.is_alive():
                raise RuntimeError(f"{name} did not stop in time")
    finally:
        sock.close()


def create_customer(
    server: RunningServer,
    products: Sequence[str] = ("pro",),
    *,
    customer_id: str | None = None,
    status: str = "active",
) -> str:
    """PUT a customer (a unique ``cus_test_…`` id unless given) with ``products``; its id."""
    cid = customer_id or f"cus_test_{uuid.uuid4().hex[:12]}"
    response = httpx.put(
        f"{server.base_url}/v1/customers/{cid}",
        json={"products": list(products), "status": status},
        headers=server.auth(),
    )
    response.raise_for_status()
    return cid


def mint_session_token(server: RunningServer, customer_id: str, expires_in: int = 3600) -> str:
    """A session token for ``customer_id``, minted through the API."""
    response = httpx.post(
        f"{server.base_url}/v1/session-tokens",
        json={"externalUserId": customer_id, "expiresIn": expires_in},
        headers=server.auth(),
    )
    response.raise_for_status()
    token: str = response.json()["sessionToken"]
    return token


@dataclass
class ServerProcess:
    """The billing server as its own OS process (``python -m billing_ui.server``), for tests
    that must stop it the way an outage does (``pause``/``resume``: SIGSTOP/SIGCONT)."""

    base_url: str
    process: subprocess.Popen[str]
    api_key: str = LOCAL_SECRET_KEY

    def pause(self) -> None:
        """Freeze the server: the kernel still accepts connections, nothing is answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        """The same as ``base_url`` (the benchmarks' word for it)."""
        return self.base_url

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the process has used so far (Linux
        ``/proc``): what a benchmark charges to the server side."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server_process(
    *,
    db_path: str | Path,
    extra_args: Sequence[str] = (),
    seed: bool = True,
    start_timeout_s: float = 30.0,
) -> Iterator[ServerProcess]:
    """Run ``python -m billing_ui.server`` on a free loopback port (seeded unless ``seed`` is
    false, no rate limit, no access log) until the block ends; waits for uvicorn's "running on"
    line, never polls. ``db_path`` may be a ``postgresql://`` URL (passed as
    ``--database-url``). The benchmarks start their servers here too (``bench/server_process``)."""
    where = "--database-url" if is_postgres_url(db_path) else "--db"
    args = [
        "-m", "billing_ui.server", "--port", "0", where, str(db_path),
        "--rate-limit-per-minute", "0", "--no-access-log", "--log-level", "info",
        *([] if seed else ["--no-seed"]), *extra_args,
    ]  # fmt: skip
    with uvicorn_process(args, start_timeout_s=start_timeout_s) as server:
        yield server


@contextmanager
def uvicorn_process(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    start_timeout_s: float = 30.0,
) -> Iterator[ServerProcess]:
    """Run ``python *args`` (any program serving with uvicorn on port 0: the billing server, a
    bare endpoint of a benchmark) until the block ends, once uvicorn says where it listens;
    terminated on exit (killed if it will not stop)."""
    command = [sys.executable, *args]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        yield ServerProcess(base_url=_wait_for_url(proc, start_timeout_s), process=proc)
    finally:
        proc.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_url(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The URL uvicorn prints once it listens (read from its stderr by a helper thread, which
    then keeps draining the pipe so the server never blocks on a full one)."""
    assert proc.stderr is not None
    stream = proc.stderr
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True, name="billing-server-stderr").start()
    deadline = time.monotonic() + timeout_s
    seen: list[str] = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if "Uvicorn running on" in line:
            return line.split("running on ")[1].split()[0]
    raise RuntimeError("the billing server did not start:\n" + "".join(seen))


def post_at_once(
    calls: Sequence[tuple[str, dict[str, Any]]], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """POST each ``(url, json)`` from a thread and a connection of its own, all released at
    the same instant (a barrier), as concurrent users would; the responses in call order."""
    barrier = threading.Barrier(len(calls))
    # One TLS context for all (unused on http://, but httpx builds one per client unless given
    # one: about 30 ms of CPU each, seconds for a test's 50 clients on a busy machine).
    tls = ssl.create_default_context()
    clients = [httpx.Client(headers=headers or {}, timeout=60, verify=tls) for _ in calls]

    def post(i: int) -> httpx.Response:
        url, body = calls[i]
        barrier.wait()
        return clients[i].post(url, json=body)

    try:
        with ThreadPoolExecutor(len(calls)) as pool:
            return list(pool.map(post, range(len(calls))))
    finally:
        for client in clients:
            client.close()


# --- looking into the database from outside ---------------------------------------------
_TABLES = ("customers", "subscriptions", "usage_events", "usage_aggregates", "usage_hourly",
           "idempotency_keys", "revoked_tokens")  # fmt: skip
_SUMS = (("usage_events", "quantity_micros"), ("usage_aggregates", "consumed_micros"),
         ("usage_hourly", "quantity_micros"))  # fmt: skip


def query(database: str | Path, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders) on a connection of its own to ``database``,
    committed (so a test can also change the data behind the server's back)."""
    if is_postgres_url(database):
        import psycopg

        with psycopg.connect(str(database)) as pg:  # commits when the block ends
            cur = pg.execute(sql.replace("?", "%s"), args)
            return cur.fetchall() if cur.description else []
    with closing(sqlite3.connect(database)) as lite, lite:  # closes; commits
        return lite.execute(sql, args).fetchall()


def fingerprint(database: str | Path) -> dict[str, int]:
    """Row counts of every table and sums of every usage quantity, in one query."""
    parts = [f"SELECT COUNT(*) FROM {table}" for table in _TABLES]
    parts += [f"SELECT COALESCE(SUM({column}), 0) FROM {table}" for table, column in _SUMS]
    (row,) = query(database, "SELECT " + ", ".join(f"({p})" for p in parts))
    names = [f"{t}.rows" for t in _TABLES] + [f"{t}.sum" for t, _ in _SUMS]
    return {name: int(value) for name, value in zip(names, row, strict=True)}


def count_events(
    database: str | Path, customer_id: str | None = None, feature_key: str | None = None
) -> int:
    """How many raw events are stored (optionally for one customer and feature)."""
    sql = "SELECT COUNT(*) FROM usage_events e JOIN customers c ON c.id = e.customer_id"
    where, args = [], []
    if customer_id is not None:
        where.append("c.external_id = ?")
        args.append(customer_id)
    if feature_key is not None:
        where.append("e.feature_key = ?")
        args.append(feature_key)
    if where:
        sql += " WHERE " + " AND ".join(where)
    ((count,),) = query(database, sql, args)
    return int(count)
