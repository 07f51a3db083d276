"""JSON request bodies read one way only: UTF-8, no byte-order mark, each key once per object.

A body that two parsers could read differently is refused instead of guessed at: Python's
``json`` keeps the *last* of two equal keys where other parsers keep the first, auto-detects a
BOM and UTF-16, and a declared ``charset=latin-1`` would be ignored — so a proxy, a log and
the server could each see another quantity. Shared by the local server
(:mod:`billing_ui.server.bodies`) and the browser-facing ASGI router (:mod:`billing_ui.asgi`);
every refusal is an :class:`InvalidInputError` on the field ``body`` naming its rule.
"""

from __future__ import annotations

import json
from typing import Any

from billing_ui.core.errors import InvalidInputError

__all__ = ["check_json_content_type", "loads_strict"]


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` that refuses a key given twice in one object."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def _refuse(rule: str, message: str) -> InvalidInputError:
    return InvalidInputError.single("body", rule, message)


def check_json_content_type(header: str) -> None:
    """``application/json`` (or ``…+json``) with no charset or ``charset=utf-8`` (JSON is
    UTF-8, RFC 8259 §8.1)."""
    media, _, params = header.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise _refuse(
            "content_type", f"must be sent as application/json, got {media or 'no content type'}"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                raise _refuse("charset", f"must be UTF-8, got charset={charset or '(empty)'}")


def loads_strict(raw: bytes) -> Any:
    """The JSON document in ``raw``: UTF-8 without a byte-order mark, each key once per object
    (rules ``bom``, ``utf8``, ``duplicate_key``, ``json``)."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise _refuse("bom", "must not start with a byte-order mark (send plain UTF-8)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("utf8", f"must be valid UTF-8 (byte {exc.start} is not)") from None
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        raise _refuse("duplicate_key", f"must not repeat the key {exc.key!r}") from None
    except (ValueError, RecursionError) as exc:  # bad JSON, absurd nesting, 5,000-digit number
        raise _refuse("json", f"must be valid JSON: {exc}") from None
