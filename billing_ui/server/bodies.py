"""Reading request bodies so that no input, however broken, reaches a 500.

FastAPI's own body handling decodes JSON before any dependency runs (so a bad body would be
reported before a missing credential) and lets a missing content type through. Instead the
routes read the raw JSON through :func:`json_body` (after authentication) and validate it with
the shared pydantic models through :func:`parse`; every failure is a 400 ``VAL_INVALID_INPUT``
naming the field. Strict on purpose (:func:`decode_json`): a duplicate key, a byte-order mark or
a charset other than UTF-8 is refused rather than guessed at, because a proxy, a log or the
sender may read such a body differently than the server does.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from billing_ui.core.errors import FieldError
from billing_ui.core.validation import field_errors_from_pydantic
from billing_ui.server.errors import invalid_input

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Room for a full batch (1,000 events with 4 KiB of metadata each), and no more."""

M = TypeVar("M", bound=BaseModel)


def _body_error(rule: str, message: str) -> Exception:
    return invalid_input([FieldError("body", rule, message)])


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one object: Python's json keeps
    the last, other parsers the first, so the sender and this server could read different
    quantities from one body."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _check_content_type(header: str) -> None:
    """``application/json`` (or ``…+json``), with no charset or ``charset=utf-8``: JSON is
    UTF-8 (RFC 8259 §8.1), and a body declared otherwise would be read as something the sender
    did not mean."""
    media, _, params = header.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise _body_error(
            "content_type", f"must be sent as application/json, got {media or 'no content type'}"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise _body_error("charset", f"must be UTF-8, got charset={charset or '(empty)'}")


def decode_json(raw: bytes) -> Any:
    """Strict JSON: UTF-8 without a byte-order mark, each key once per object."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _body_error("bom", "must not start with a byte-order mark (send plain UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _body_error("utf8", f"must be valid UTF-8 (byte {exc.start} is not)") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise _body_error("duplicate_key", f"must not repeat the key {exc.key!r}") from None
    except (ValueError, RecursionError) as exc:  # bad JSON, absurd nesting, 5,000-digit number
        raise _body_error("json", f"must be valid JSON: {exc}") from None


async def json_body(request: Request) -> Any:
    """The request's JSON document (any JSON value), or a 400."""
    _check_content_type(request.headers.get("content-type", ""))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _body_error("max_bytes", f"must be at most {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _body_error("max_bytes", f"must be at most {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise _body_error("required", "is required: send a JSON object")
    return decode_json(raw)


JsonBody = Annotated[Any, Depends(json_body)]


def parse(model: type[M], data: Any) -> M:
    """Validate ``data`` with one of the shared request models, or raise a 400."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(field_errors_from_pydantic(exc)) from None
    except RecursionError:
        raise _body_error("json", "is nested too deeply") from None
