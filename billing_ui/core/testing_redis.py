"""A throwaway Redis server for tests and benchmarks: ``with temp_redis() as url:``.

It runs Debian's ``redis-server`` (package ``redis-server``) on a free loopback port, in a
temporary directory that is deleted afterwards, with persistence off; nothing is downloaded and
no system Redis is touched.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

START_TIMEOUT_S = 20.0


class RedisUnavailable(RuntimeError):
    """No ``redis-server`` on this machine (install Debian's ``redis-server``)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def temp_redis() -> Iterator[str]:
    """Start a Redis server; yield its ``redis://127.0.0.1:PORT/0`` URL; stop it and delete its
    directory. Raises :class:`RedisUnavailable` when ``redis-server`` is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable("redis-server is not installed (Debian package redis-server)")
    with tempfile.TemporaryDirectory(prefix="billing-ui-redis-") as tmp:
        for _attempt in range(3):  # another process may take the free port before we bind it
            port = _free_port()
            proc = subprocess.Popen(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp,
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--notify-keyspace-events", ""],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + START_TIMEOUT_S
            while proc.poll() is None and not _answers(port):
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RedisUnavailable(f"redis-server did not answer on port {port}")
                time.sleep(0.02)
            if proc.poll() is None:
                break
        else:
            raise RedisUnavailable("redis-server exited at start three times")
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
