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

The parent says it is running (uvicorn's "Uvicorn running on" line, what scripts and tests wait
for) only once every worker has finished its start-up and serves: each worker writes one byte
to its own pipe when uvicorn has started, and a worker that dies first closes its pipe
unwritten, so the parent learns either at once (no polling). Before that, a test that paused a
worker right after the line could catch the other still starting (issue 13: a /health request
timed out once at load ~12).

The parent forwards SIGTERM and SIGINT to the workers and waits for them; if a worker dies
on its own, the others are stopped too and the exit status is 1, so a supervisor (systemd, a
container runtime) restarts the whole server rather than running it short of a worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
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


def serve(sock: socket.socket, count: int, run_worker: Callable[[Callable[[], None]], None]) -> int:
    """Fork ``count`` workers that each call ``run_worker(ready)`` (which serves ``sock``
    until it is told to stop, calling ``ready()`` once it accepts connections), then
    supervise them; the exit status for the whole server."""
    children: list[int] = []
    pipes: list[int] = []  # the read end of each worker's readiness pipe
    for _ in range(count):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            for fd in (read_end, *pipes):
                os.close(fd)
            os._exit(_run(run_worker, write_end))
        os.close(write_end)
        children.append(pid)
        pipes.append(read_end)
    host, port = sock.getsockname()[:2]
    where = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
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
    if _all_ready(pipes) and not stopping:
        # uvicorn's own words (its workers do not log them when given a socket)
        log.info("Uvicorn running on http://%s (Press CTRL+C to quit)", where)
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


def _run(run_worker: Callable[[Callable[[], None]], None], ready_fd: int) -> int:
    """A worker's life: its exit status; ``ready()`` writes the one byte the parent waits for."""

    def ready() -> None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)

    try:
        run_worker(ready)
    except BaseException:
        log.exception("worker %d failed", os.getpid())
        return 1
    return 0


def _all_ready(pipes: list[int]) -> bool:
    """Wait until every worker said it serves (true) or one ended first (false: the
    supervision that follows sees it exit and stops the others). Closes the pipes."""
    waiting = set(pipes)
    try:
        while waiting:
            readable, _, _ = select.select(list(waiting), [], [])
            for fd in readable:
                if not os.read(fd, 1):  # end of file: the worker exited unready
                    return False
                waiting.discard(fd)
        return True
    finally:
        for fd in pipes:
            os.close(fd)
