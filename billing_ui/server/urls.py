"""The request URL must be UTF-8 once percent-decoded, or the request is refused.

The ASGI server decodes ``%ff%fe`` into replacement characters (U+FFFD), so two different
customer ids in a path or a query — ``%ff`` and ``%fe`` — would both arrive as ``"\ufffd"``
and name one customer. Checked on the raw bytes before any route runs; a 400
``VAL_INVALID_INPUT`` names ``path`` or the query parameter.
"""

from __future__ import annotations

from urllib.parse import unquote_to_bytes

from fastapi import Request

from billing_ui.core.errors import FieldError
from billing_ui.server.errors import invalid_input


def _is_utf8(raw: bytes) -> bool:
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def strict_utf8_url(request: Request) -> None:
    """App-wide dependency: refuse a path or query parameter that is not UTF-8."""
    scope = request.scope
    raw_path = scope.get("raw_path") or scope["path"].encode()
    if not _is_utf8(raw_path):
        raise invalid_input([FieldError("path", "utf8", "must be valid UTF-8 once decoded")])
    for part in scope.get("query_string", b"").split(b"&"):
        name, _, value = part.replace(b"+", b" ").partition(b"=")
        if not (_is_utf8(name) and _is_utf8(value)):
            field = unquote_to_bytes(name).decode("utf-8", "replace") or "query"
            raise invalid_input([FieldError(field, "utf8", "must be valid UTF-8 once decoded")])
