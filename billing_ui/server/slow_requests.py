"""Close connections whose request arrives too slowly (slowloris), whatever uvicorn does.

uvicorn has a keep-alive timeout between requests, but none while a request is arriving: its
timer is cancelled by the first byte, and a fresh connection has none at all. Measured before
this module: 1,000 half-sent request heads were still held after 23 s, partial bodies after
120 s, each holding a socket and a file descriptor of the server.

:func:`protocol_with_deadlines` returns uvicorn's own h11 protocol with two deadlines, counted
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
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT_S = 10.0
DEFAULT_BODY_TIMEOUT_S = 30.0

log = logging.getLogger("billing_ui.server")


class _DeadlineH11Protocol(H11Protocol):
    header_timeout = DEFAULT_HEADER_TIMEOUT_S
    body_timeout = DEFAULT_BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: object = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._follow_phase()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._follow_phase()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_phase()

    def _follow_phase(self) -> None:
        """(Re)arm the deadline when the client starts owing us a head or a body."""
        phase = self.conn.their_state
        if phase is self._phase:
            return
        self._phase = phase
        self._cancel_deadline()
        if phase is h11.IDLE:
            timeout, what = self.header_timeout, "request head"
        elif phase is h11.SEND_BODY:
            timeout, what = self.body_timeout, "request body"
        else:
            return  # DONE: the application is answering; or the connection is ending
        self._deadline = self.loop.call_later(timeout, self._expire, what, timeout)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, what: str, timeout: float) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        log.info("closed %s: %s not received within %g s", self.client, what, timeout)
        self.transport.close()


def protocol_with_deadlines(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT_S,
    body_timeout: float = DEFAULT_BODY_TIMEOUT_S,
) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with these deadlines, for ``uvicorn.Config(http=...)``."""
    if header_timeout <= 0 or body_timeout <= 0:
        raise ValueError("header_timeout and body_timeout must be > 0 seconds")
    return type(
        "DeadlineH11Protocol",
        (_DeadlineH11Protocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
