"""The demo as it is deployed at scale, all on this machine: ``make demo-scaled``.

Four parts, each started for real and stopped on exit (Ctrl-C):

- **Redis** (Debian's ``redis-server``, a throwaway one on a free loopback port in a temporary
  directory): Reflex's state manager (``REFLEX_REDIS_URL``: every tab's state, so any worker
  can serve any event) and billing_ui's query store (``BILLING_UI_REDIS_URL``: one upstream
  request per customer per interval across workers, and the live-meter channel between them).
- **The local billing server** (``python -m billing_ui.server``) on **PostgreSQL** (a throwaway
  cluster, Debian's ``postgresql``), with 2 processes when the server offers ``--workers``;
  on SQLite with ``--sqlite``. It plays BillingOS, seeded with the demo customers.
- **The demo app in Reflex's production mode** (``reflex run --env prod``): the frontend
  exported and served as static files, and the backend run by granian with **2 worker
  processes** (``GRANIAN_WORKERS``) that share nothing but Redis. A browser's socket lands on
  either; Reflex records which (:meth:`ScaledDemo.instance_of`).

Open the printed URL in two tabs, sign in as the same customer, track in one: the other's
meter moves at once, whichever worker serves it. Tests and benchmarks use :func:`scaled_demo`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import pickletools
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from billing_ui.core import _constants as C
from billing_ui.core.testing_redis import temp_redis
from billing_ui.demo.reflex_process import reflex_run

START_TIMEOUT_S = 240.0
"""The first start exports the frontend (a minute or more on a busy machine)."""
WORKERS = 2
SOCKET_RECORD_PREFIX = "token_manager_socket_record_"
"""Reflex's Redis key of a tab's socket record (``reflex.utils.token_manager``): which worker
instance holds the socket of a client token."""


@dataclass
class ScaledDemo:
    """The running parts' addresses, and how to tell which worker serves a tab."""

    frontend_url: str
    backend_url: str
    billing_url: str
    redis_url: str
    database: str
    reflex: subprocess.Popen[bytes]
    log_path: Path

    def socket_of(self, token: str) -> tuple[str, str] | None:
        """:func:`socket_record` of the tab ``token`` in this demo's Redis."""
        return socket_record(self.redis_url, token)

    def instance_of(self, token: str) -> str | None:
        """The id of the backend worker that holds the tab ``token``'s socket (or None)."""
        record = self.socket_of(token)
        return record[0] if record else None


def socket_record(redis_url: str, token: str) -> tuple[str, str] | None:
    """``(worker instance id, socket id)`` of the tab ``token``'s socket: Reflex's own record
    in Redis of which backend worker holds it; None while it has none."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.get(SOCKET_RECORD_PREFIX + token)
    finally:
        client.close()
    if not raw:
        return None
    fields = _pickled_strings(bytes(raw))  # type: ignore[arg-type]
    return fields["instance_id"], fields["sid"]


def _pickled_strings(data: bytes) -> dict[str, str]:
    """The string fields of Reflex's pickled ``SocketRecord``, read from the pickle's opcodes
    without unpickling it (nothing in it is executed): each field name is followed by its
    value."""
    strings = [arg for _op, arg, _pos in pickletools.genops(data) if isinstance(arg, str)]
    return dict(itertools.pairwise(strings))


def _server_offers_workers() -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "billing_ui.server", "--help"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return "--workers" in out


@contextlib.contextmanager
def _billing_server(database: str, workers: int) -> Iterator[str]:
    from billing_ui.server.testing import server_process

    extra = ["--workers", str(workers)] if workers > 1 and _server_offers_workers() else []
    with server_process(db_path=database, extra_args=extra) as server:
        yield server.base_url


@contextlib.contextmanager
def _database(sqlite: bool) -> Iterator[str]:
    if sqlite:
        with tempfile.TemporaryDirectory(prefix="billing-ui-scaled-") as tmp:
            yield str(Path(tmp) / "billing.db")
        return
    from billing_ui.server.testing_postgres import temp_postgres

    with temp_postgres() as pg:
        yield pg.create_database("demo")


def _wait_http(url: str, proc: subprocess.Popen[bytes], log_path: Path, deadline: float) -> None:
    while True:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the Reflex app exited ({proc.returncode}):\n{log_path.read_text()}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer in time:\n{log_path.read_text()[-4000:]}")
        time.sleep(0.25)


@contextlib.contextmanager
def _reflex_prod(env: Mapping[str, str], log_path: Path, workers: int) -> Iterator[ScaledDemo]:
    args = ["--env", "prod", "--single-port"]
    granian = {"GRANIAN_WORKERS": str(workers), "REFLEX_USE_GRANIAN": "true"}
    with reflex_run(args, {**granian, **env}, log_path) as (proc, port):
        deadline = time.monotonic() + START_TIMEOUT_S
        backend = frontend = f"http://127.0.0.1:{port}"
        _wait_http(backend + "/ping", proc, log_path, deadline)
        _wait_http(frontend + "/", proc, log_path, deadline)
        yield ScaledDemo(
            frontend_url=frontend, backend_url=backend, billing_url=env[C.ENV_BASE_URL],
            redis_url=env["REFLEX_REDIS_URL"], database="", reflex=proc, log_path=log_path,
        )  # fmt: skip


@contextlib.contextmanager
def scaled_demo(
    *,
    sqlite: bool = False,
    workers: int = WORKERS,
    refresh_interval: float = 30.0,
    customers: list[str] | None = None,
    billing_url: str | None = None,
    redis_url: str | None = None,
    namespace: str = "billing_ui",
    log_path: Path | None = None,
) -> Iterator[ScaledDemo]:
    """Start Redis, the local billing server (PostgreSQL, or SQLite with ``sqlite``) and the
    demo with ``workers`` backend workers; stop them all when the block ends. Given
    ``billing_url`` / ``redis_url``, use those instead of starting them (``namespace``: the
    billing keys' prefix in a shared Redis). The app's output goes to ``log_path`` (a
    temporary file by default)."""
    with contextlib.ExitStack() as stack:
        if redis_url is None:
            redis_url = stack.enter_context(temp_redis())
        database = ""
        if billing_url is None:
            database = stack.enter_context(_database(sqlite))
            billing_url = stack.enter_context(_billing_server(database, workers))
        if log_path is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="billing-ui-scaled-"))
            log_path = Path(tmp) / "reflex.log"
        env = {
            "REFLEX_REDIS_URL": redis_url,
            "BILLING_UI_REDIS_URL": redis_url,
            C.ENV_BASE_URL: billing_url,
            C.ENV_SECRET_KEY: os.environ.get(C.ENV_SECRET_KEY) or C.LOCAL_SECRET_KEY,
            "BILLING_UI_REFRESH_INTERVAL": str(refresh_interval),
            "BILLING_UI_NAMESPACE": namespace,
        }
        if customers:
            env["BILLING_UI_DEMO_CUSTOMERS"] = ",".join(customers)
        demo = stack.enter_context(_reflex_prod(env, log_path, workers))
        demo.database = database
        yield demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo-scaled", description=__doc__.split("\n")[0])
    parser.add_argument("--sqlite", action="store_true", help="the billing server on SQLite")
    parser.add_argument("--workers", type=int, default=WORKERS, help="backend worker processes")
    args = parser.parse_args(argv)
    # Ctrl-C even when started with SIGINT ignored (a background job of a script), and a
    # plain `kill` too: both unwind the stack below, which stops every part.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    database = "" if args.sqlite else "PostgreSQL, "
    print(f"[demo-scaled] starting Redis, {database}the billing server and the demo "
          f"with {args.workers} backend workers (the first start builds the frontend)…",
          flush=True)  # fmt: skip
    log = Path(tempfile.gettempdir()) / f"billing-ui-demo-scaled-{os.getpid()}.log"
    with scaled_demo(sqlite=args.sqlite, workers=args.workers, log_path=log) as demo:
        store = "SQLite" if args.sqlite else "PostgreSQL"
        print(
            f"[demo-scaled] Redis          {demo.redis_url}  (Reflex state + billing query store)\n"
            f"[demo-scaled] billing server {demo.billing_url}  (on {store})\n"
            f"[demo-scaled] backend        {demo.backend_url}  ({args.workers} worker processes)\n"
            f"[demo-scaled] app log        {log}\n"
            f"[demo-scaled] open {demo.frontend_url} in two tabs, sign in as the same customer "
            "and track in one. Ctrl-C stops everything.",
            flush=True,
        )
        with contextlib.suppress(KeyboardInterrupt):
            while demo.reflex.poll() is None:
                time.sleep(0.5)
    print("[demo-scaled] stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
