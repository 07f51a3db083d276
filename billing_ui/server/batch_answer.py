"""A batch's answer (``TrackUsageBatchResult``) written as JSON text item by item, straight
from the write's outcomes.

The answer of a 1,000-event batch used to be built as 1,000 nested dicts (item, result,
usage) and encoded in one ``orjson`` call; building the dicts, encoding them, and a second
pass counting the outcomes for the server's metrics were about a fifth of the server's CPU
per batch (``bench/db_ceiling.py``). What varies between two answers of one customer and
feature is only the index, the quantity, the usage after the event, the instant on a
replay, ``duplicate`` and the key; the rest of the item is written once per customer and
feature (:class:`Shape`) and the item is one format string.

The bytes are those the models write (``tests/server/test_wire_json.py``): numbers are
written by Python's ``repr`` only where it is the shortest round-trip form in positional
notation, which is what orjson (and so pydantic) writes then; anything in exponent form,
any key that needs escaping, any datetime, and every outcome but a plain recorded or
replayed event are encoded by :mod:`billing_ui.server.wire_json` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from operator import sub, truediv
from typing import Any, Final

from billing_ui.core.models import TrackUsageBatchResult
from billing_ui.server import wire_json
from billing_ui.server.clock import from_micros
from billing_ui.server.errors import ApiProblem

_MICROS: Final = 1_000_000
"""Stored millionths per unit (as the service divides them: exactly, int by int)."""


def _text(value: Any) -> str:
    return wire_json.dumps(value).decode()


def _number(value: float) -> str:
    """``value`` as orjson writes it."""
    text = repr(value)
    return _text(value) if "e" in text or "n" in text else text  # exponent, inf, nan


@dataclass(frozen=True, slots=True)
class Shape:
    """What every answer of one customer and feature in a batch shares, as JSON text."""

    head: str
    """From ``"result"`` to the quantity's colon."""
    limit: str
    """Between the consumed units and the remaining units."""
    tail: str
    """From after the remaining units to ``"duplicate":``."""
    limit_micros: int | None


def shape(
    feature_key: str,
    limit_micros: int | None,
    limit_units: float | None,
    period_start: datetime,
    period_end: datetime | None,
) -> Shape:
    """The shared text of the answers for one feature's usage snapshot (the fields in the
    models' order: ``TrackUsageResult``, ``UsageSnapshot``)."""
    return Shape(
        f'"result":{{"success":true,"feature_key":{_text(feature_key)},"quantity":',
        f',"limit_units":{_text(limit_units)},"remaining_units":',
        f',"period_start":{_text(period_start)},"period_end":{_text(period_end)}}},"duplicate":',
        limit_micros,
    )


@dataclass(frozen=True, slots=True)
class TrackedBatch:
    """A batch's answer, encoded, and how many events were recorded, replayed, refused."""

    encoded: bytes
    counts: tuple[int, int, int]

    @property
    def result(self) -> TrackUsageBatchResult:
        return TrackUsageBatchResult.model_validate_json(self.encoded)

    def body(self) -> bytes:
        return self.encoded

    def tally(self) -> tuple[int, int, int]:
        """How many events were ``(recorded, replayed, refused)`` (for the server's metrics)."""
        return self.counts


def _units(micros: int) -> str:
    """Stored millionths as the API's units, as orjson writes them (finite, non-negative)."""
    text = repr(micros / _MICROS)
    return _text(micros / _MICROS) if "e" in text else text


def recorded_now(
    now: datetime,
    shapes: Sequence[Shape],
    of_event: Sequence[int],
    quantities: Sequence[int],
    consumed: Sequence[int],
    keys: Sequence[str],
) -> TrackedBatch:
    """The answer of a batch whose every event was recorded at ``now`` (none refused or
    replayed): for event ``i``, its shape (``shapes[of_event[i]]``), quantity, the usage
    after it and its key; the same items as :meth:`BatchAnswer.usage` writes.

    Written column by column, with no Python per event: each column's text is made by
    ``map`` in C (the numbers by ``repr``: orjson's text for a finite float in positional
    notation, which holds for millionths at or above 100, see :func:`_units_column`), and
    the items by one ``join`` over the columns interleaved with the constant text."""
    now_json = _text(now)
    joined = "".join(keys)  # printable ASCII with no quote or backslash: written as is
    plain = joined.isascii() and joined.isprintable() and not ('"' in joined or "\\" in joined)
    quote = '"' if plain else ""
    quoted = keys if plain else list(map(_text, keys))
    if len(set(quantities)) == 1:
        text = _number(quantities[0] / _MICROS)
        heads = list(map([_head(sh, text, now_json) for sh in shapes].__getitem__, of_event))
    else:
        found: dict[tuple[int, int], str] = {}
        heads = []
        for i, q in zip(of_event, quantities, strict=True):
            head = found.get((i, q))
            if head is None:
                head = found[(i, q)] = _head(shapes[i], _number(q / _MICROS), now_json)
            heads.append(head)
    limits = [sh.limit_micros for sh in shapes]
    if None not in limits:
        left = map(max, repeat(0), map(sub, map(limits.__getitem__, of_event), consumed))
        remaining: Any = _units_column(list(left))
    elif limits.count(None) == len(limits):
        remaining = repeat("null")
    else:
        remaining = [
            "null" if limit is None else _units(max(0, limit - c))
            for limit, c in zip(map(limits.__getitem__, of_event), consumed, strict=True)
        ]
    n = len(keys)
    columns = zip(
        _ITEM_STARTS[:n] if n <= len(_ITEM_STARTS) else map('{{"index":{},'.format, range(n)),
        heads,
        _units_column(consumed),
        map([sh.limit for sh in shapes].__getitem__, of_event),
        remaining,
        map([sh.tail for sh in shapes].__getitem__, of_event),
        repeat('false,"idempotency_key":' + quote),
        quoted,
        repeat(quote + '},"error":null},'),
        strict=False,  # the repeats are endless; the rest have one item per event
    )
    body = '{"results":[' + "".join(chain.from_iterable(columns))[:-1] + "]}"
    return TrackedBatch(body.encode(), (n, 0, 0))


_ITEM_STARTS: Final = tuple(f'{{"index":{i},' for i in range(1000))
"""The start of the answer's items of a batch up to its largest size, written once."""


def _head(shape: Shape, quantity: str, now_json: str) -> str:
    """An item's text from ``"result"`` to the consumed units' colon."""
    return f'{shape.head}{quantity},"recorded_at":{now_json},"usage":{{"consumed_units":'


def _units_column(micros: Sequence[int]) -> list[str]:
    """:func:`_units` of each of ``micros``, by ``repr`` in C unless one is below 100
    millionths (0 excepted), where ``repr`` may write an exponent (``1e-05``)."""
    if min(micros, default=0) >= 100 or not any(0 < m < 100 for m in micros):
        return list(map(repr, map(truediv, micros, repeat(_MICROS))))
    return list(map(_units, micros))


class BatchAnswer:
    """The items of one batch's answer, added in index order."""

    __slots__ = (
        "_errors",
        "_items",
        "_now_json",
        "_now_us",
        "_quantities",
        "recorded",
        "refused",
        "replayed",
    )

    def __init__(self, now: datetime, now_us: int) -> None:
        self._items: list[str] = []
        self._now_us = now_us
        self._now_json = _text(now)
        self._errors: dict[int, str] = {}
        self._quantities: dict[int, str] = {}
        self.recorded = self.replayed = self.refused = 0

    def usage(
        self,
        index: int,
        shape: Shape,
        replayed: bool,
        quantity_micros: int,
        recorded_at_us: int,
        consumed_micros: int,
        key: str | None,
    ) -> None:
        """A recorded event (or a replay of one of the same feature) with its usage.

        Written inline (it runs once per event): the quantities' text once per distinct
        quantity, the numbers by ``repr`` unless in exponent form (they are finite: stored
        millionths divided by a million), the key as is unless it needs escaping."""
        if replayed:
            self.replayed += 1
        else:
            self.recorded += 1
        recorded_at = (
            self._now_json if recorded_at_us == self._now_us else _text(from_micros(recorded_at_us))
        )
        quantity = self._quantities.get(quantity_micros)
        if quantity is None:
            quantity = self._quantities[quantity_micros] = _number(quantity_micros / _MICROS)
        consumed = repr(consumed_micros / _MICROS)
        if "e" in consumed:
            consumed = _text(consumed_micros / _MICROS)
        limit = shape.limit_micros
        if limit is None:
            remaining = "null"
        else:
            remaining = repr(max(0, limit - consumed_micros) / _MICROS)
            if "e" in remaining:
                remaining = _text(max(0, limit - consumed_micros) / _MICROS)
        if key is None or not (key.isascii() and key.isprintable()) or '"' in key or "\\" in key:
            key = _text(key)
        else:
            key = f'"{key}"'
        self._items.append(
            f'{{"index":{index},{shape.head}{quantity},"recorded_at":{recorded_at}'
            f',"usage":{{"consumed_units":{consumed}{shape.limit}{remaining}{shape.tail}'
            f'{"true" if replayed else "false"},"idempotency_key":{key}}},"error":null}}'
        )

    def answer(self, index: int, answer: dict[str, Any]) -> None:
        """Any other ``TrackUsageResult``, as plain data in the model's field order."""
        if answer["duplicate"]:
            self.replayed += 1
        else:
            self.recorded += 1
        self._items.append(_text({"index": index, "result": answer, "error": None}))

    def problem(self, index: int, problem: ApiProblem) -> None:
        """A refused event (its code and message; a batch shares one problem per cause)."""
        self.refused += 1
        error = self._errors.get(id(problem))
        if error is None:
            error = self._errors[id(problem)] = _text(
                {"code": problem.code, "message": problem.message}
            )
        self._items.append(f'{{"index":{index},"result":null,"error":{error}}}')

    def finish(self) -> TrackedBatch:
        body = '{"results":[' + ",".join(self._items) + "]}"
        return TrackedBatch(body.encode(), (self.recorded, self.replayed, self.refused))
