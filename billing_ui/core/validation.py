"""Input rules shared by the client (before any request) and the local server (at its edge).

Each checker takes an untrusted value, returns it normalised, or raises
:class:`~billing_ui.core.errors.InvalidInputError` naming the field and the rule. They are
strict on purpose: a browser can send any JSON to a Reflex handler, so ``"7"``, ``True``,
``NaN`` or ``10**30`` must be refused here, not coerced.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from billing_ui.core import _constants as C
from billing_ui.core.errors import FieldError, InvalidInputError

_MICROS = 10**C.QUANTITY_DECIMALS
_EXACT = 2**53
"""Below this, a whole float is exactly its integer (and its shortest repr)."""


def _fail(field: str, rule: str, message: str) -> InvalidInputError:
    return InvalidInputError.single(field, rule, message)


def _check_text(value: object, field: str, max_len: int) -> str:
    if not isinstance(value, str):
        raise _fail(field, "type", f"must be a string, got {type(value).__name__}")
    if not value:
        raise _fail(field, "non_empty", "must not be empty")
    if len(value) > max_len:
        raise _fail(field, "max_length", f"must be at most {max_len} characters")
    if not value.isprintable():
        raise _fail(field, "printable", "must not contain control characters")
    return value


def check_feature_key(value: object, field: str = "feature_key") -> str:
    """A feature key: ``C.FEATURE_KEY_RULE``."""
    text = _check_text(value, field, C.FEATURE_KEY_MAX_LEN)
    if not C.FEATURE_KEY_PATTERN.fullmatch(text):
        raise _fail(field, "pattern", f"must be {C.FEATURE_KEY_RULE}")
    return text


def check_customer_id(value: object, field: str = "customer_id") -> str:
    """The app's own user id (BillingOS ``external_user_id``): printable, 1-255 characters."""
    text = _check_text(value, field, C.CUSTOMER_ID_MAX_LEN)
    if text != text.strip():
        raise _fail(field, "no_surrounding_space", "must not start or end with white space")
    return text


def check_idempotency_key(value: object, field: str = "idempotency_key") -> str | None:
    """``None``, or a printable key of 1-255 characters."""
    if value is None:
        return None
    return _check_text(value, field, C.IDEMPOTENCY_KEY_MAX_LEN)


def check_quantity(value: object, field: str = "quantity") -> float:
    """A finite number > 0 and <= ``MAX_QUANTITY`` with at most 6 decimal places.

    Refuses ``bool`` (a Python ``int``), strings, NaN and infinities. Integers are compared
    as integers: ``10**400`` is simply too large (``math.isfinite`` would raise
    ``OverflowError`` on it, and ``float()`` too).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise _fail(field, "type", f"must be a number, got {type(value).__name__}")
    if not isinstance(value, int):
        finite = value.is_finite() if isinstance(value, Decimal) else math.isfinite(value)
        if not finite:  # Decimal("sNaN") would make math.isfinite raise a bare ValueError
            raise _fail(field, "finite", "must be a finite number (not NaN or infinity)")
    if value <= 0:
        raise _fail(field, "gt_zero", "must be greater than 0")
    if value > C.MAX_QUANTITY:
        raise _fail(field, "max", f"must be at most {C.MAX_QUANTITY:,.0f}")
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return float(value)  # whole numbers have no decimals: skip the Decimal round trip
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if exact != exact.quantize(Decimal(1).scaleb(-C.QUANTITY_DECIMALS)):
        raise _fail(field, "decimals", f"must have at most {C.QUANTITY_DECIMALS} decimal places")
    return float(value)


def quantity_to_micros(quantity: float) -> int:
    """Exact integer millionths of a validated quantity (what the server stores and sums)."""
    whole = int(quantity)
    if whole == quantity and -_EXACT < whole < _EXACT:  # the common case, 20x cheaper
        return whole * _MICROS
    return int(Decimal(repr(quantity)).scaleb(C.QUANTITY_DECIMALS))


def micros_to_quantity(micros: int) -> float:
    """Back from stored millionths to the float the API speaks."""
    return micros / _MICROS


def check_metadata(value: object, field: str = "metadata") -> dict[str, Any] | None:
    """``None`` or a JSON object with string keys, at most ``METADATA_MAX_BYTES`` bytes
    serialised and ``METADATA_MAX_DEPTH`` levels deep."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _fail(field, "type", f"must be an object (dict), got {type(value).__name__}")
    if _depth(value) > C.METADATA_MAX_DEPTH:
        raise _fail(field, "max_depth", f"must nest at most {C.METADATA_MAX_DEPTH} levels")
    if not _string_keys(value):
        # Checked at every level: json.dumps would silently turn {1: x} into {"1": x}.
        raise _fail(field, "string_keys", "keys must be strings (at every level)")
    try:
        encoded = json.dumps(value, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise _fail(
            field, "json", f"must be JSON-serialisable (no NaN, sets or objects): {exc}"
        ) from None
    if len(encoded.encode()) > C.METADATA_MAX_BYTES:
        raise _fail(
            field, "max_bytes", f"must serialise to at most {C.METADATA_MAX_BYTES} bytes of JSON"
        )
    result: dict[str, Any] = json.loads(encoded)
    return result


def _string_keys(value: object) -> bool:
    """Every mapping key, at every level, is a string (depth is already bounded)."""
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _string_keys(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_string_keys(v) for v in value)
    return True


def _depth(value: object, level: int = 0) -> int:
    if level > C.METADATA_MAX_DEPTH:
        return level  # deep enough to refuse; stop before recursion gets expensive
    if isinstance(value, Mapping):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list | tuple):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def field_errors_from_pydantic(exc: Any) -> list[FieldError]:
    """Turn a ``pydantic.ValidationError`` into FieldErrors, keeping our rule names.

    A rule broken inside one of the checkers above keeps its own field-less rule name; pydantic's
    own failures (missing field, unknown field, wrong shape) keep pydantic's error type as rule.
    """
    out: list[FieldError] = []
    for err in exc.errors():
        field = ".".join(str(part) for part in err.get("loc", ())) or "body"
        original = (err.get("ctx") or {}).get("error")
        if isinstance(original, InvalidInputError):
            first = original.errors[0]
            out.append(FieldError(field, first.rule, first.message))
        elif err.get("type") == "extra_forbidden":
            out.append(FieldError(field, "unknown_field", "is not a known field"))
        elif err.get("type") == "missing":
            out.append(FieldError(field, "required", "is required"))
        else:
            out.append(FieldError(field, str(err.get("type")), str(err.get("msg"))))
    return out
