"""Slowly arriving requests are cut off; everybody else is still served meanwhile.

Raw sockets against the real server process (``python -m billing_ui.server``) with 1-second
header and body timeouts, so the whole file stays within a few seconds.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from billing_ui.server.testing import ServerProcess, server_process

TIMEOUT_S = 1.0
SLACK_S = 4.0  # a loaded 2-CPU machine may fire the timer late; never early


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("slow") / "billing.db"
    args = ["--header-timeout", str(TIMEOUT_S), "--body-timeout", str(TIMEOUT_S)]
    with server_process(db_path=db, extra_args=args) as server:
        yield server


def connect(srv: ServerProcess) -> socket.socket:
    url = httpx.URL(srv.base_url)
    sock = socket.create_connection((url.host, url.port), timeout=5)
    sock.setblocking(False)
    return sock


def wait_closed(socks: list[socket.socket], deadline: float) -> dict[socket.socket, float]:
    """When the server closed each socket (EOF or reset), waiting at most until ``deadline``."""
    closed: dict[socket.socket, float] = {}
    with selectors.DefaultSelector() as sel:
        for sock in socks:
            sel.register(sock, selectors.EVENT_READ)
        while len(closed) < len(socks) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(timeout=left):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                if not data:
                    closed[sock] = time.monotonic()
                    sel.unregister(sock)
    return closed


HEAD = b"POST /v1/usage/track HTTP/1.1\r\nHost: billing\r\nContent-Type: application/json\r\n"


def test_half_sent_heads_and_bodies_are_closed_while_others_are_served(srv):
    # The server's deadline runs from each accept, so the clock starts before the first
    # connect: "not cut off early" is measured from no later than the server's own start.
    started = time.monotonic()
    silent = [connect(srv) for _ in range(20)]  # connect, send nothing
    half_heads = [connect(srv) for _ in range(40)]
    half_bodies = [connect(srv) for _ in range(40)]
    for sock in half_heads:
        sock.sendall(HEAD)  # no blank line: the head never ends
    for sock in half_bodies:
        sock.sendall(HEAD + b"Content-Length: 1000\r\n\r\n{")
    held = silent + half_heads + half_bodies
    try:
        # while all of them are held open, the server answers others at once
        with httpx.Client(base_url=srv.base_url, timeout=5) as api:
            for _ in range(5):
                t0 = time.monotonic()
                assert api.get("/health").status_code == 200
                assert time.monotonic() - t0 < 1.0
        closed = wait_closed(held, started + TIMEOUT_S + SLACK_S)
        assert len(closed) == len(held), f"{len(held) - len(closed)} slow requests still held"
        assert min(closed.values()) - started >= TIMEOUT_S * 0.9  # not cut off early
    finally:
        for sock in held:
            sock.close()


def test_dripping_a_byte_at_a_time_does_not_reset_the_deadline(srv):
    started = time.monotonic()  # before the connect: the server's deadline runs from accept
    sock = connect(srv)
    try:
        for byte in HEAD:
            try:
                sock.send(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if wait_closed([sock], time.monotonic() + 0.1):
                break
        elapsed = time.monotonic() - started
        assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + SLACK_S, elapsed
    finally:
        sock.close()


def test_a_request_that_arrives_in_time_is_answered(srv):
    with httpx.Client(base_url=srv.base_url, timeout=5) as api:
        response = api.post(
            "/v1/usage/track",
            json={"customer_id": "demo_pro", "feature_key": "api_calls", "quantity": 1},
            headers={"Authorization": f"Bearer {srv.api_key}"},
        )
    assert response.status_code == 200, response.text
