"""A load driver that costs the server's side little: raw keep-alive HTTP/1.1 over loopback.

    python -m bench._driver --port P --connections 8 --requests 3000 --tag round-1 \
        [--cpu 1] [--path /v1/usage/track]

The ``Authorization`` header, if any, comes from the ``BENCH_DRIVER_AUTHORIZATION``
environment variable (never the command line, which any process may read).

Why not httpx: a threaded httpx client spends about as much CPU per request as a bare
Starlette endpoint does, so when both share a 2-CPU machine the client bounds the throughput
of both sides and their ratio says nothing about the server (bench/http_ceiling.py measured
1.08-1.20 "server over bare" while the server cost 2-3.6x the bare endpoint's CPU).

This driver runs in its own process (optionally pinned to one CPU, away from the server),
encodes every request before the clock starts (a distinct ``idempotency_key`` each: the
server records every one), and keeps ``--connections`` keep-alive connections with one
request in flight on each, on one ``selectors`` loop: per request it does one ``send``, one or
two ``recv`` and a ``find`` for the end of the head. A response is read whole by its
``content-length``; a status other than 200 stops the run. It prints one JSON line:
``{"requests", "wall_s", "cpu_s", "selects", "statuses"}``, where ``cpu_s`` is this
process's CPU over the timed part only and ``selects`` how many times it waited for the
server (wake-ups: with a slow server about one per response, with a fast one fewer).

Standard library only, so the driver's start-up and footprint do not depend on the app.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import time
from collections import Counter

CUSTOMER = "ceiling_bench"
AUTH_ENV = "BENCH_DRIVER_AUTHORIZATION"


def track_body(n: int, tag: str, customer: str = CUSTOMER) -> bytes:
    """The JSON body of the ``n``-th one-event track of a run (the server's and the bare
    endpoint's input alike)."""
    event = {"customer_id": customer, "feature_key": "api_calls", "quantity": 1}
    return json.dumps({**event, "idempotency_key": f"{tag}-{n}"}).encode()


def encode_requests(port: int, path: str, headers: list[str], bodies: list[bytes]) -> list[bytes]:
    """Each body as a complete HTTP/1.1 POST (head and body in one buffer)."""
    fixed = "".join(f"{h}\r\n" for h in headers)
    head = f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{fixed}"
    return [f"{head}content-length: {len(b)}\r\n\r\n".encode("latin-1") + b for b in bodies]


class _Conn:
    __slots__ = ("buf", "need", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.need = -1  # total bytes of the response being read; -1: head not complete


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise RuntimeError(f"response without content-length: {head[:200]!r}")
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17 : end])


def drive(port: int, requests: list[bytes], connections: int) -> dict[str, object]:
    """Send every request over ``connections`` keep-alive connections, one in flight each."""
    sel = selectors.DefaultSelector()
    conns = []
    for _ in range(min(connections, len(requests))):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(_Conn(sock))
    statuses: Counter[bytes] = Counter()
    todo = iter(requests)
    in_flight = 0
    selects = 0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for conn in conns:
        conn.sock.sendall(next(todo))
        in_flight += 1
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    while in_flight:
        selects += 1
        for key, _ in sel.select():
            conn = key.data
            chunk = conn.sock.recv(65536)
            if not chunk:
                raise RuntimeError("the server closed a keep-alive connection")
            conn.buf += chunk
            if conn.need < 0:
                end = conn.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                conn.need = end + 4 + _content_length(conn.buf[:end])
            if len(conn.buf) < conn.need:
                continue
            status = conn.buf[9:12]
            statuses[status] += 1
            if status != b"200":
                raise RuntimeError(f"status {status!r}: {conn.buf[: conn.need]!r}")
            conn.buf, conn.need = conn.buf[conn.need :], -1
            in_flight -= 1
            request = next(todo, None)
            if request is not None:
                conn.sock.sendall(request)
                in_flight += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    for conn in conns:
        sel.unregister(conn.sock)
        conn.sock.close()
    return {
        "requests": len(requests),
        "wall_s": wall,
        "cpu_s": cpu,
        "selects": selects,
        "statuses": {k.decode(): v for k, v in statuses.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/v1/usage/track")
    parser.add_argument("--requests", type=int, required=True)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--tag", required=True, help="makes the idempotency keys distinct")
    parser.add_argument("--cpu", type=int, help="pin this process to this CPU")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    headers = ["content-type: application/json"]
    if auth := os.environ.get(AUTH_ENV):
        headers.append(f"authorization: {auth}")
    bodies = [track_body(i, args.tag) for i in range(args.requests)]
    requests = encode_requests(args.port, args.path, headers, bodies)
    print(json.dumps(drive(args.port, requests, args.connections)), flush=True)


if __name__ == "__main__":
    main()
