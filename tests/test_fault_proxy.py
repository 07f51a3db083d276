"""The fault proxy (tests/faults.py) stops cleanly: a connection still held when it stops (a
request forwarded before, so it has an upstream connection, and one held now) is closed on
the proxy's own loop, so nothing is left for the garbage collector to close after the loop is
gone ("RuntimeError: Event loop is closed", which pytest reports as
PytestUnraisableExceptionWarning). Real sockets, the real billing server behind the proxy."""

from __future__ import annotations

import gc
import socket
import sys
import threading
from pathlib import Path

import pytest

from billing_ui.server.testing import running_server
from tests.faults import FaultProxy, hold


def test_stopping_with_a_held_request_leaves_nothing_to_the_garbage_collector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(repr(u.exc_value)))
    with running_server(db_path=tmp_path / "billing.db") as server:
        proxy = FaultProxy(server.base_url).start()
        never = threading.Event()
        proxy.on("/held", hold(never))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as client:
            client.sendall(b"GET /health HTTP/1.1\r\nhost: proxy\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 ")  # forwarded: upstream open
            client.sendall(b"GET /held HTTP/1.1\r\nhost: proxy\r\n\r\n")
            proxy.wait_for(lambda seen: any(r.path == "/held" for r in seen))
            proxy.stop()
            gc.collect()
    assert unraisable == []
