"""Encoding the server's hottest answers (tracks) as JSON straight from plain data.

The track routes build their answers as dicts laid out like the response models
(``TrackUsageResult``, ``TrackUsageBatchResult``: same keys, same order, floats as floats,
instants as aware UTC datetimes) and encode them here with orjson, whose output for such data
is byte for byte what pydantic's ``model_dump_json`` writes (``Z`` for UTC, microseconds only
when non-zero, shortest float repr). Validating 1,000 results into models and dumping them
took more CPU than the whole database write of a batch; ``tests/server/test_wire_json.py``
pins the bytes to the models'.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

_OPTIONS: Final = orjson.OPT_UTC_Z


def dumps(data: Any) -> bytes:
    """``data`` (dicts, lists, str, float, int, bool, None, datetime) as compact JSON."""
    return orjson.dumps(data, option=_OPTIONS)
