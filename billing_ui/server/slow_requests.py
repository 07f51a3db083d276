"""Close connections whose request arrives too slowly (slowloris), whatever uvicorn does.

uvicorn has a keep-alive timeout between requests, but none while a request is arriving: its
timer is cancelled by the first byte, and a fresh connection has none at all. Measured before
this module: 1,000 half-sent request heads were still held after 23 s, partial bodies after
120 s, each holding a socket and a file descriptor of the server.

:func:`protocol_with_deadlines` returns uvicorn's own HTTP/1.1 protocol (httptools when
installed, else h11) with two deadlines, counted
from the start of each phase (not reset by each byte, so dripping one byte a second does not
help):

* ``header_timeout`` — from the connection's start, or the end of the previous response, until
  the request head is complete;
* ``body_timeout`` — from the end of the head until the body is complete.

While the application is answering, no deadline runs: slowness there is the server's own.
A connection past its deadline is closed; every other connection is served as before (the
deadline is a timer on the event loop, nothing blocks).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard]: uvicorn prefers httptools when it is installed, and so do we
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - depends on the installed extras
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0
_EARLY_S = 0.001
"""A timer may fire up to the loop's clock resolution early: that is on time."""

log = logging.getLogger("billing_ui.server")


class _Deadlines:
    """The timer, shared by both protocol flavours; they call :meth:`_enter` with the phase
    the client is in: ``"request head"``, ``"request body"`` or ``None`` (nothing owed).

    A keep-alive connection changes phase three times per request, so a phase change only
    moves the due time; one timer per connection stays armed and, when it fires before the
    due time (the phase changed since), re-arms itself for it. It is re-armed early only when
    the new due time comes before the armed one (a header deadline after a body phase).
    Scheduling and cancelling a timer at each change cost about 8 µs per request."""

    header_timeout = DEFAULT_HEADER_TIMEOUT_S
    body_timeout = DEFAULT_BODY_TIMEOUT_S
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: Any
    _phase: str | None = None
    _due = 0.0
    _deadline: asyncio.TimerHandle | None = None

    def _enter(self, phase: str | None) -> None:
        if phase == self._phase:
            return
        self._phase = phase
        if phase is None:
            return  # the armed timer, if any, will find nothing owed
        timeout = self.header_timeout if phase == "request head" else self.body_timeout
        self._due = self.loop.time() + timeout
        if self._deadline is not None and self._deadline.when() <= self._due:
            return
        self._cancel_deadline()
        if not self.transport.is_closing():
            self._deadline = self.loop.call_at(self._due, self._check)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _check(self) -> None:
        self._deadline = None
        phase = self._phase
        if phase is None or self.transport.is_closing():
            return
        if self.loop.time() + _EARLY_S < self._due:  # the phase changed since it was armed
            self._deadline = self.loop.call_at(self._due, self._check)
            return
        timeout = self.header_timeout if phase == "request head" else self.body_timeout
        log.info("closed %s: %s not received within %g s", self.client, phase, timeout)
        self.transport.close()


_H11_PHASES: Final = {h11.IDLE: "request head", h11.SEND_BODY: "request body"}


class _DeadlineH11Protocol(_Deadlines, H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def _follow(self) -> None:
        # h11 DONE: the application is answering; MUST_CLOSE/CLOSED/ERROR: ending anyway
        self._enter(_H11_PHASES.get(self.conn.their_state))


def _httptools_flavour() -> type[asyncio.Protocol] | None:
    if HttpToolsProtocol is None:  # pragma: no cover
        return None

    class _DeadlineHttpToolsProtocol(_Deadlines, HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._enter("request head")

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._enter("request body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._enter(None)  # the application is answering

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._enter("request head")

    return _DeadlineHttpToolsProtocol


def protocol_with_deadlines(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
    flavour: str = "auto",
) -> type[asyncio.Protocol]:
    """uvicorn's HTTP/1.1 protocol with these deadlines, for ``uvicorn.Config(http=...)``:
    httptools when installed (``flavour="auto"``, as uvicorn itself chooses), else h11."""
    if header_timeout <= 0 or body_timeout <= 0:
        raise ValueError("header_timeout and body_timeout must be > 0 seconds")
    base = _httptools_flavour() if flavour in ("auto", "httptools") else None
    if base is None:
        if flavour == "httptools":
            raise ValueError("httptools is not installed")
        base = _DeadlineH11Protocol
    return type(
        "DeadlineHTTPProtocol",
        (base,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
