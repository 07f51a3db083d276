"""A real TCP proxy that injects faults between a client and the real billing server.

Why it exists: the faults a retrying client must survive — a 503 from a load balancer, a 429
with ``Retry-After``, a response lost after the server committed the write, a connection closed
mid-request — cannot be produced on demand by the real server. This proxy produces them on
real sockets over loopback, per request, and forwards everything else untouched to the real
server, so the tests still exercise the real HTTP stack on both sides and the real database.
It is a fault injector, not a mock: it never invents a successful answer.

It speaks just enough HTTP/1.1 to find message boundaries (``Content-Length`` or chunked
bodies, keep-alive connections) and records every request it sees (method, path, headers,
body), so a test can assert how many attempts were made and that each carried the same
idempotency key.

Usage::

    with FaultProxy(server_url) as proxy:
        proxy.on("/v1/usage/track", respond(503), drop_response())   # then forward
        client = BillingClient(base_url=proxy.url, ...)
        ...
        assert [r.idempotency_key for r in proxy.seen("/v1/usage/track")] == [key] * 3

Runs its own event loop in a daemon thread, so it serves sync and async clients alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

ActionKind = Literal["forward", "respond", "drop_response", "close", "stall", "hold"]


@dataclass(frozen=True)
class Action:
    """What the proxy does with one request."""

    kind: ActionKind
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    gate: threading.Event | None = None
    then: Action | None = None


def forward() -> Action:
    """Relay the request to the server and its response back (the default)."""
    return Action("forward")


def respond(
    status: int, headers: dict[str, str] | None = None, body: dict[str, object] | None = None
) -> Action:
    """Answer the request itself with ``status`` (a BillingOS error envelope by default) and
    keep the connection open; the server never sees the request."""
    payload = body or {
        "error": {
            "code": "RATE_LIMIT_EXCEEDED" if status == 429 else "SYS_UNAVAILABLE",
            "message": "injected by the fault proxy",
            "requestId": "req_fault",
        },
        "statusCode": status,
    }
    return Action("respond", status, tuple((headers or {}).items()), json.dumps(payload).encode())


def drop_response() -> Action:
    """Relay the request to the server, wait for its full response, then close the client's
    connection without relaying it: the write happened, the client cannot know."""
    return Action("drop_response")


def close() -> Action:
    """Close the client's connection as soon as the request arrives, without forwarding it."""
    return Action("close")


def stall() -> Action:
    """Hold the request without forwarding or answering until the client gives up and closes
    the connection (a hung server: the client's timeout must fire)."""
    return Action("stall")


def hold(gate: threading.Event, then: Action | None = None) -> Action:
    """Hold the request, neither forwarded nor answered, until the test sets ``gate``; then do
    ``then`` (forward it, by default): a slow upstream whose answer arrives when the test
    chooses, e.g. after the signed-in customer changed."""
    return Action("hold", gate=gate, then=then or forward())


@dataclass(frozen=True)
class SeenRequest:
    """One request as it reached the proxy, and what the proxy did with it."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    action: ActionKind

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    def json(self) -> object:
        return json.loads(self.body)


@dataclass
class _Rule:
    path: str
    actions: deque[Action] = field(default_factory=deque)


class FaultProxy:
    """See the module docstring. ``upstream`` is the real server's base URL."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"upstream needs a host and a port: {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._rules: list[_Rule] = []
        self._seen: list[SeenRequest] = []
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle
    def start(self) -> FaultProxy:
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - start-up failure
                failure.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=main, name="fault-proxy", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            # Cancel every connection's handler and let it run its cleanup (closing both
            # sockets) here, on the running loop. A handler left suspended would be closed
            # by the garbage collector after loop.close(): its ``finally`` then calls
            # transport.close() on a closed loop, "RuntimeError: Event loop is closed",
            # which pytest reports as PytestUnraisableExceptionWarning.
            assert self._server is not None
            self._server.close()
            handlers = list(self._handlers)
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting and inspection
    def on(self, path: str, *actions: Action) -> None:
        """Queue ``actions`` for the next requests whose path is ``path`` (query ignored), one
        per request, in order; after they run out such requests are forwarded."""
        with self._cond:
            self._rules.append(_Rule(path, deque(actions)))

    def clear(self) -> None:
        """Drop every queued action: from now on every request is forwarded."""
        with self._cond:
            self._rules.clear()

    def seen(self, path: str | None = None) -> list[SeenRequest]:
        with self._cond:
            return [r for r in self._seen if path is None or r.path == path]

    def wait_for(self, predicate: Callable[[list[SeenRequest]], bool], timeout: float = 10) -> None:
        """Block until ``predicate(seen requests)`` holds (a condition, not a sleep)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self._seen)):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"condition not met; proxy saw {self._seen!r}")
                self._cond.wait(left)

    def _next_action(self, path: str) -> Action:
        with self._cond:
            for rule in self._rules:
                if rule.path == path and rule.actions:
                    return rule.actions.popleft()
        return forward()

    def _record(self, request: SeenRequest) -> None:
        with self._cond:
            self._seen.append(request)
            self._cond.notify_all()

    # -- the proxy
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                message = await _read_message(reader)
                if message is None:
                    return
                raw, head, body = message
                method, target, _version = head[0].split(" ", 2)
                url = urlsplit(target)
                action = self._next_action(url.path)
                self._record(
                    SeenRequest(method, url.path, url.query, _headers(head), body, action.kind)
                )
                if action.kind == "hold":
                    assert action.gate is not None and action.then is not None
                    while not action.gate.is_set():
                        await asyncio.sleep(0.005)
                    action = action.then
                if action.kind == "close":
                    return
                if action.kind == "stall":
                    await reader.read()  # until the client closes the connection
                    return
                if action.kind == "respond":
                    writer.write(_response(action))
                    await writer.drain()
                    continue
                if upstream is None:
                    upstream = await asyncio.open_connection(*self._upstream)
                upstream[1].write(raw)
                await upstream[1].drain()
                reply = await _read_message(upstream[0])
                if reply is None:
                    return
                if action.kind == "drop_response":
                    return
                writer.write(reply[0])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._handlers.discard(task)
            if upstream is not None:
                upstream[1].close()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


def _headers(head: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


async def _read_message(
    reader: asyncio.StreamReader,
) -> tuple[bytes, list[str], bytes] | None:
    """One HTTP/1.1 message: (raw bytes, head lines, body), or None at a clean EOF."""
    try:
        raw_head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        return None
    head = raw_head[:-4].decode("latin-1").split("\r\n")
    headers = _headers(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        raw_body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0].strip(), 16)
            data = await reader.readexactly(size + 2)
            raw_body += size_line + data
            if size == 0:
                # Trailers (none expected) end with an empty line, consumed above.
                break
            chunks.append(data[:-2])
        return raw_head + raw_body, head, b"".join(chunks)
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return raw_head + body, head, body


def _response(action: Action) -> bytes:
    reason = {429: "Too Many Requests", 503: "Service Unavailable"}.get(action.status, "Error")
    lines = [
        f"HTTP/1.1 {action.status} {reason}",
        "content-type: application/json",
        f"content-length: {len(action.body)}",
        "x-request-id: req_fault",
        *(f"{name}: {value}" for name, value in action.headers),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + action.body


def free_port() -> int:
    """A port nothing listens on (bound, then released): connecting to it is refused."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keys(requests: Iterable[SeenRequest]) -> list[str | None]:
    """The idempotency keys of ``requests`` (header), in order."""
    return [r.idempotency_key for r in requests]
