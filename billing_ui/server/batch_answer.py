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
    quantities: Sequence[int],
    consumed: Sequence[int],
    keys: Sequence[str],
) -> TrackedBatch:
    """The answer of a batch whose every event was recorded at ``now`` (none refused or
    replayed): for event ``i``, its shape, quantity, the usage after it and its key; the
    same items as :meth:`BatchAnswer.usage` writes, written column-wise in one loop (it runs
    once per event: no call per event but the numbers' text)."""
    now_json = _text(now)
    joined = "".join(keys)  # printable ASCII with no quote or backslash: written as is
    plain = joined.isascii() and joined.isprintable() and not ('"' in joined or "\\" in joined)
    quoted = [f'"{k}"' for k in keys] if plain else list(map(_text, keys))
    heads: dict[tuple[int, int], str] = {}
    items: list[str] = []
    add = items.append
    for i, (sh, q, c, key) in enumerate(zip(shapes, quantities, consumed, quoted, strict=True)):
        head = heads.get((id(sh), q))
        if head is None:
            head = heads[(id(sh), q)] = (
                f'{sh.head}{_number(q / _MICROS)},"recorded_at":{now_json}'
                ',"usage":{"consumed_units":'
            )
        limit = sh.limit_micros
        remaining = "null" if limit is None else _units(max(0, limit - c))
        add(
            f'{{"index":{i},{head}{_units(c)}{sh.limit}{remaining}{sh.tail}'
            f'false,"idempotency_key":{key}}},"error":null}}'
        )
    body = '{"results":[' + ",".join(items) + "]}"
    return TrackedBatch(body.encode(), (len(items), 0, 0))


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
