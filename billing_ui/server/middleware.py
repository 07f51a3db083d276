"""Request ids: ``req_<hex>`` on every response, including errors and 500s.

The id is given to each request by :class:`~billing_ui.server.observability.ObservabilityMiddleware`
(one pure-ASGI layer for the request id, the log record and the metrics: each layer costs a
coroutine and a ``send`` wrapper per request on the hottest path). It is stored in the request
state, where the error handlers find it for the envelope's ``requestId``, and
:func:`with_request_id` adds the ``x-request-id`` header to whatever response goes out.
"""

from __future__ import annotations

import secrets

from starlette.types import Message

from billing_ui.server.errors import REQUEST_ID_HEADER

_HEADER = REQUEST_ID_HEADER.encode()


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def with_request_id(message: Message, rid: str) -> Message:
    """An ``http.response.start`` message with the ``x-request-id`` header, unless it has one
    already (the error handlers set it themselves)."""
    headers = list(message.get("headers", ()))
    for name, _ in headers:
        if name.lower() == _HEADER:
            break
    else:
        headers.append((_HEADER, rid.encode()))
    return {**message, "headers": headers}
