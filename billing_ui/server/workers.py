"""``--workers N``: several server processes accepting on one listening socket.

The parent binds the port, forks N workers and then only supervises: each worker opens its own
store (database connections and pools never cross a fork) and runs uvicorn on the inherited
socket, and the kernel spreads connections between them. Not ``uvicorn --workers``: it
re-imports the application from an import string in fresh interpreters, which cannot carry
this server's options (a plans file, a key, the slow-request deadlines' protocol class).

Every guarantee that holds between separate server processes holds between workers, because
they are exactly that (``tests/server/test_processes.py`` runs its checks both ways): the
database decides idempotency and hard limits. What a worker keeps in its own memory is per
worker: the rate limit counts each customer's tracks per process, so N workers admit up to N
times the limit. Unix only (``os.fork``).

The parent forwards SIGTERM and SIGINT to the workers and waits for them; if a worker dies
on its own, the others are stopped too and the exit status is 1, so a supervisor (systemd, a
container runtime) restarts the whole server rather than running it short of a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("billing_ui.server")


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: any free port), inheritable."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def serve(sock: socket.socket, count: int, run_worker: Callable[[], None]) -> int:
    """Fork ``count`` workers that each call ``run_worker`` (which serves ``sock`` until it
    is told to stop), then supervise them; the exit status for the whole server."""
    children: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker
            status = 0
            try:
                run_worker()
            except BaseException:
                log.exception("worker %d failed", os.getpid())
                status = 1
            finally:
                os._exit(status)
        children.append(pid)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if sock.family == socket.AF_INET6 else host
    # uvicorn's own words (its workers do not log them when given a socket), once every
    # worker exists: what scripts and tests wait for. Connections queue in the backlog until
    # a worker accepts them.
    log.info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", where, port)
    sock.close()  # the workers hold it
    stopping = False

    def stop(signum: int = signal.SIGTERM, frame: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    status = 0
    alive = set(children)
    while alive:
        try:
            pid, _ = os.wait()
        except ChildProcessError:
            break
        alive.discard(pid)
        if not stopping:
            log.error("worker %d exited on its own: stopping the others", pid)
            status = 1
            stop()
    return status
