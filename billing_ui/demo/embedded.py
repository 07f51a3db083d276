"""The embedded local billing server the demo runs when no ``BILLINGOS_API_URL`` is given.

It runs inside the Reflex backend process, in its own thread and event loop (so billing
requests never queue behind the app's own work), for exactly the backend's lifetime: Reflex
starts it as a lifespan task and stops it on shutdown or hot reload. Nothing starts at import,
because ``reflex run`` also imports the app in its compiling process, which must not bind the
port. The SQLite file (``./.data/billing.db``) survives restarts; seeding is idempotent.

The file lives in ``.data/`` (hidden) rather than beside ``rxconfig.py`` because ``reflex run``
watches every file present in the app root at start for hot reload and ignores only ``*.db``:
a leftover ``billing.db-wal`` or ``-shm`` there made every SQLite write reload the backend, in a
loop. Reflex skips hidden directories.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from functools import cache
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("billing_ui.demo")

ENV_DB: Final = "BILLING_UI_DB"
ENV_PORT: Final = "BILLING_UI_PORT"
DEFAULT_DB: Final = ".data/billing.db"
DEFAULT_PORT: Final = 8700
HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 15.0

_lock = threading.Lock()
_running: dict[str, Any] = {}


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


@cache
def port() -> int:
    """``BILLING_UI_PORT``, else 8700 if free, else any free port (fixed per process)."""
    raw = os.environ.get(ENV_PORT, "").strip()
    if raw:
        return int(raw)
    if _port_is_free(DEFAULT_PORT):
        return DEFAULT_PORT
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        free: int = sock.getsockname()[1]
        return free


def base_url() -> str:
    return f"http://{HOST}:{port()}"


def db_path() -> Path:
    return Path(os.environ.get(ENV_DB, "").strip() or DEFAULT_DB).resolve()


def start() -> None:
    """Start the server thread (once per process) and wait until it accepts connections."""
    import uvicorn

    from billing_ui.server import SqliteStore, create_app, load_plans
    from billing_ui.server.options import CorsPolicy
    from billing_ui.server.seed import seed_demo_customers

    with _lock:
        if _running:
            return
        db_path().parent.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(db_path())
        # As the CLI: a loopback server lets the developer's own origins call it from a browser
        # (a BillingOS React widget beside the dashboard), unless BILLING_UI_CORS_ORIGINS says.
        app = create_app(store=store, plans=load_plans(), cors=CorsPolicy.for_host(HOST))
        seeded = seed_demo_customers(app.state.service)
        server = uvicorn.Server(
            # lifespan on: the server prunes expired idempotency keys hourly in it
            uvicorn.Config(app, host=HOST, port=port(), log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="billing-server", daemon=True)
        thread.start()
        _running.update(server=server, thread=thread, store=store)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        stop()
        raise RuntimeError(f"the embedded billing server did not start on {base_url()}")
    log.warning(
        "billing server: %s (db %s; demo customers: %s)", base_url(), db_path(), ", ".join(seeded)
    )


def stop() -> None:
    with _lock:
        server, thread, store = (_running.pop(k, None) for k in ("server", "thread", "store"))
    if server is not None:
        server.should_exit = True
    if thread is not None:
        thread.join(timeout=START_TIMEOUT_S)
    if store is not None:
        store.close()


@contextlib.asynccontextmanager
async def lifespan() -> AsyncIterator[None]:
    """Reflex lifespan task: the server lives exactly as long as the app's backend."""
    import asyncio

    await asyncio.to_thread(start)
    try:
        yield
    finally:
        await asyncio.to_thread(stop)
