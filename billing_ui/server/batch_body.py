"""Track bodies (``POST /v1/usage/track-batch``, and the one-event ``POST /v1/usage/track``)
read and validated in one pass, with every refusal worded as the shared models word it.

Validating 1,000 events through :class:`~billing_ui.core.models.TrackUsageBatchRequest`
(strict JSON decoding with a duplicate-key hook, then five Python checkers per event through
pydantic) cost about half of the server's own work per batch, more than the database write.
So a batch is first read by a lean, strict pydantic ``TypeAdapter`` straight from the raw
bytes (``validate_json``: parsing and checking in pydantic's core, no Python per field) whose
rules are *narrower* than the models' (ASCII ids and keys, a required idempotency key; see
:data:`_CustomerId` and its neighbours). Anything it does not accept — and anything it
cannot vouch for, below — is read again the reference way (``loads_strict`` and the
model), which gives the exact 400 naming the field and the rule, or accepts an input
the lean reader was too narrow for. A one-event track is read the same way
(:func:`track_command`; the reference being ``TrackUsageRequest``, where the idempotency key
is optional): there the strict decoder and the model's five checkers were a sixth of the
server's CPU per request. So the fast path changes what a batch costs, never what
it means: it accepts a subset of what the models accept, with the same values (a test checks
both readers on the bad-input catalogue and on generated bodies).

What the lean reader cannot see, and how it is covered:

* **A key given twice in one object** (``strict_json`` refuses it; pydantic keeps the last).
  Each key of a JSON document is followed by exactly one ``:`` outside strings, so a document
  with as many ``:`` bytes as its parsed objects have keys has no key twice; otherwise (a
  colon inside a string) the reference decoder checks it.
* **Escaped characters** (``\\u``): pydantic and ``json`` differ on lone surrogates, so
  such bodies take the reference path.
* **Quantities with decimals and metadata**: checked by the same checkers as the models
  (:mod:`billing_ui.core.validation`), on the few events that carry them.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Annotated, Any, Final, NotRequired

import orjson
from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from billing_ui.core import _constants as C
from billing_ui.core import validation as V
from billing_ui.core.errors import FieldError, InvalidInputError
from billing_ui.core.models import TrackUsageBatchRequest, TrackUsageRequest
from billing_ui.core.strict_json import loads_strict
from billing_ui.server.bodies import json_document, parse
from billing_ui.server.errors import invalid_input
from billing_ui.server.service import Columns, Command, TrackCommand

_STRICT: Final = ConfigDict(extra="forbid", strict=True)

_CustomerId = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=C.CUSTOMER_ID_MAX_LEN, pattern=r"^[!-~](?:[ -~]*[!-~])?$"
    ),
]
"""Printable ASCII with no surrounding space: a subset of ``check_customer_id``."""
_FeatureKey = Annotated[
    str,
    StringConstraints(
        min_length=1, max_length=C.FEATURE_KEY_MAX_LEN, pattern=C.FEATURE_KEY_PATTERN.pattern
    ),
]
"""``check_feature_key``'s own pattern (printable by construction)."""
_IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=C.IDEMPOTENCY_KEY_MAX_LEN, pattern=r"^[ -~]+$")
]
"""Printable ASCII, and required: a subset of ``check_idempotency_key`` plus the batch rule."""
_Quantity = Annotated[float, Field(gt=0, le=C.MAX_QUANTITY, allow_inf_nan=False)]
"""A finite JSON number in range (no ``bool``, no string); decimals are checked after."""


class _Event(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    customer_id: _CustomerId
    feature_key: _FeatureKey
    quantity: _Quantity
    idempotency_key: _IdempotencyKey
    metadata: NotRequired[dict[str, Any] | None]


class _One(TypedDict):
    """A one-event track's body: as :class:`_Event`, the idempotency key optional."""

    __pydantic_config__ = _STRICT  # type: ignore[misc]
    customer_id: _CustomerId
    feature_key: _FeatureKey
    quantity: _Quantity
    idempotency_key: NotRequired[_IdempotencyKey | None]
    metadata: NotRequired[dict[str, Any] | None]


class _Batch(TypedDict):
    __pydantic_config__ = _STRICT  # type: ignore[misc]
    events: Annotated[list[_Event], Field(min_length=1, max_length=1000)]


_LEAN: Final = TypeAdapter(_Batch)
_LEAN_ONE: Final = TypeAdapter(_One)


def track_commands(raw: bytes) -> list[Command]:
    """The batch's events as commands, or the 400 the models give (every rule of
    ``TrackUsageBatchRequest``, and each event's idempotency key required)."""
    fast = _lean(raw)
    return fast if fast is not None else _reference(raw)


_FIELDS: Final = ("customer_id", "feature_key", "quantity", "idempotency_key")
_FIELD_GETTERS: Final = tuple(map(itemgetter, _FIELDS))


def track_columns(raw: bytes) -> Columns | list[Command]:
    """The batch's events as :class:`Columns` when they are plain (:func:`plain_columns`),
    else as commands (:func:`track_commands`), or the 400 the models give."""
    return plain_columns(raw) or track_commands(raw)


def plain_columns(raw: bytes) -> Columns | None:
    """The events of ``raw`` as columns if it is the plainest batch: ASCII with no escape
    at all, events of exactly the four fields (no metadata), each key once per object (as
    many ``:`` as keys); else ``None`` (nothing is refused here).

    The per-field rules are the models' own checkers (:mod:`billing_ui.core.validation`),
    run once per *distinct* value (a batch repeats its customers, features and quantities),
    and for the idempotency keys, all distinct, the same rules column-wise in C (type,
    length, printable); the document is read by orjson, which reads such a document to the
    same values as the reference decoder. Reading a 1,000-event batch this way costs about
    half of the lean reader's pydantic pass and its loop (``bench/db_ceiling.py``)."""
    if not raw.isascii() or b"\\" in raw:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    events = doc.get("events") if type(doc) is dict and len(doc) == 1 else None
    if type(events) is not list or not 1 <= len(events) <= 1000:
        return None
    n = len(events)
    if set(map(type, events)) != {dict} or sum(map(len, events)) != 4 * n:
        return None
    if raw.count(b":") != 1 + 4 * n:  # a colon inside a string, or a key twice
        return None
    try:
        cids, features, quantities, keys = (list(map(get, events)) for get in _FIELD_GETTERS)
        for check, column in (
            (V.check_customer_id, cids),
            (V.check_feature_key, features),
            (V.check_quantity, quantities),
        ):
            for value in set(column):
                check(value)
    except (KeyError, InvalidInputError):
        return None
    if (
        not set(map(type, quantities)) <= {int, float}  # a set of values hides True behind 1
        or set(map(type, keys)) != {str}
        or min(map(len, keys)) < 1
        or max(map(len, keys)) > C.IDEMPOTENCY_KEY_MAX_LEN
        or not "".join(keys).isprintable()
    ):  # check_idempotency_key's rules, column-wise
        return None
    return Columns(cids, features, list(map(float, quantities)), keys)


def _reference(raw: bytes) -> list[Command]:
    """The models' reading: strict JSON, ``TrackUsageBatchRequest``, then the batch rule."""
    req = parse(TrackUsageBatchRequest, json_document(raw))
    missing = [
        FieldError(f"events.{i}.idempotency_key", "required", "is required in a batch")
        for i, e in enumerate(req.events)
        if e.idempotency_key is None
    ]
    if missing:
        raise invalid_input(missing)
    return [
        (e.customer_id, e.feature_key, e.quantity, e.idempotency_key, e.metadata)
        for e in req.events
    ]


def track_command(raw: bytes) -> TrackCommand:
    """A one-event track's body as a command, or the 400 ``TrackUsageRequest`` gives."""
    fast = _lean_one(raw)
    return fast if fast is not None else _reference_one(raw)


def _reference_one(raw: bytes) -> TrackCommand:
    """The model's reading of a one-event body: strict JSON, then ``TrackUsageRequest``."""
    req = parse(TrackUsageRequest, json_document(raw))
    return TrackCommand(
        req.customer_id, req.feature_key, req.quantity, req.idempotency_key, req.metadata
    )


def _lean_one(raw: bytes) -> TrackCommand | None:
    """The command if the lean reader accepts the one-event body ``raw`` and can vouch for
    it, else ``None`` (nothing is refused here)."""
    if not _vouchable(raw):
        return None
    try:
        cmd, keys = _command(_LEAN_ONE.validate_json(raw))
        if raw.count(b":") != keys:
            loads_strict(raw)  # a colon inside a string: let the strict decoder look for twins
    except (ValidationError, RecursionError, InvalidInputError):
        return None
    return TrackCommand(*cmd)


def _vouchable(raw: bytes) -> bool:
    """Whether the lean reader may read ``raw`` at all (no escapes, no byte-order mark)."""
    return b"\\u" not in raw and not raw.startswith(b"\xef\xbb\xbf")


def _lean(raw: bytes) -> list[Command] | None:
    """The commands if the lean reader accepts ``raw`` and can vouch for it, else ``None``
    (nothing is refused here)."""
    if not _vouchable(raw):
        return None
    try:
        events = _LEAN.validate_json(raw)["events"]
    except (ValidationError, RecursionError):
        return None
    keys = 1 + sum(map(len, events))  # "events", and each event's own keys
    cmds: list[Command] = []
    append = cmds.append
    try:
        for e in events:  # inline for the plain event (a batch has 1,000): no call, no check
            quantity = e["quantity"]
            if "metadata" not in e and quantity.is_integer():
                append((e["customer_id"], e["feature_key"], quantity, e["idempotency_key"], None))
                continue
            cmd, n = _command(e)
            keys += n - len(e)  # the metadata's own keys
            append(cmd)
        if raw.count(b":") != keys:
            loads_strict(raw)  # a colon inside a string: let the strict decoder look for twins
    except InvalidInputError:
        return None
    return cmds


def _command(e: _Event | _One) -> tuple[Command, int]:
    """One event read by a lean reader as a command (a plain tuple: a batch builds 1,000),
    and how many object keys it held; the checks the lean types cannot express (decimals,
    metadata) raise InvalidInputError."""
    keys = len(e)
    quantity = e["quantity"]
    if not quantity.is_integer():
        V.check_quantity(quantity)  # at most 6 decimal places
    metadata = e.get("metadata")
    if metadata is not None:
        keys += _keys_in(metadata)
        metadata = V.check_metadata(metadata)
    cmd = (e["customer_id"], e["feature_key"], quantity, e.get("idempotency_key"), metadata)
    return cmd, keys


def _keys_in(value: object) -> int:
    """How many object keys ``value`` holds, at every level (metadata depth is bounded by
    the parser's own recursion limit here, and by ``check_metadata`` after)."""
    if isinstance(value, dict):
        return len(value) + sum(_keys_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(_keys_in(v) for v in value)
    return 0
