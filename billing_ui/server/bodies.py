"""Reading request bodies so that no input, however broken, reaches a 500.

FastAPI's own body handling decodes JSON before any dependency runs (so a bad body would be
reported before a missing credential) and lets a missing content type through. Instead the
routes read the raw JSON through :func:`json_body` (after authentication) and validate it with
the shared pydantic models through :func:`parse`; every failure is a 400 ``VAL_INVALID_INPUT``
naming the field. Strict on purpose (:mod:`billing_ui.core.strict_json`): a duplicate key, a
byte-order mark or a charset other than UTF-8 is refused rather than guessed at, because a
proxy, a log or the sender may read such a body differently than the server does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from billing_ui.core.errors import FieldError, InvalidInputError
from billing_ui.core.strict_json import check_json_content_type, loads_strict
from billing_ui.core.validation import field_errors_from_pydantic
from billing_ui.server.errors import invalid_input

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Room for a full batch (1,000 events with 4 KiB of metadata each), and no more."""

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def _body_error(rule: str, message: str) -> Exception:
    return invalid_input([FieldError("body", rule, message)])


def _strict(check: Callable[[T], Any], value: T) -> Any:
    """Run a :mod:`billing_ui.core.strict_json` check; its refusal as the server's 400."""
    try:
        return check(value)
    except InvalidInputError as exc:
        raise invalid_input(exc.errors) from None


async def json_body(request: Request) -> Any:
    """The request's JSON document (any JSON value), or a 400."""
    return json_document(await raw_json_body(request))


def json_document(raw: bytes) -> Any:
    """The JSON document in a body read by :func:`raw_json_body`, or a 400."""
    return _strict(loads_strict, raw)


async def raw_json_body(request: Request) -> bytes:
    """The request's body, unparsed, once its content type, size and presence are checked
    (for a route that parses and validates in one pass: :mod:`billing_ui.server.batch_body`),
    or a 400."""
    _strict(check_json_content_type, request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _body_error("max_bytes", f"must be at most {MAX_BODY_BYTES} bytes")
    raw = await _receive_body(request)
    if not raw.strip():
        raise _body_error("required", "is required: send a JSON object")
    return raw


async def _receive_body(request: Request) -> bytes:
    """The body's bytes (at most :data:`MAX_BODY_BYTES`, else a 400), read from the ASGI
    messages as ``Request.stream()`` reads them but without its async generator (two frames
    and an ``aclosing`` per request on the track route); kept as ``Request.body()``'s."""
    if hasattr(request, "_body"):
        return request._body
    if request._stream_consumed:
        raise RuntimeError("Stream consumed")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] == "http.request":
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise _body_error("max_bytes", f"must be at most {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif message["type"] == "http.disconnect":
            request._is_disconnected = True
            raise ClientDisconnect()
    request._stream_consumed = True
    raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = raw
    return raw


JsonBody = Annotated[Any, Depends(json_body)]
RawJsonBody = Annotated[bytes, Depends(raw_json_body)]


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` with one of the shared request models, or raise a 400."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(field_errors_from_pydantic(exc)) from None
    except RecursionError:
        raise _body_error("json", "is nested too deeply") from None
