"""When to retry a request and how long to wait first — pure functions, no I/O.

The policy is the one openai-python and anthropic-sdk-python converged on, adapted to billing:

* Retry what may succeed on a second try: no response at all (connection refused or reset, a
  response lost on the way back, a timeout), ``408``, ``409`` (a concurrent request holds the
  same idempotency key), ``429`` and ``5xx``. Never any other ``4xx``: the same request would be
  refused again.
* Retrying is only safe because every write is idempotent: each track carries one idempotency
  key for all of its attempts, so a track whose response was lost is not counted twice.
* Wait ``Retry-After`` (or ``retry-after-ms``) when the server says so, up to
  ``MAX_RETRY_AFTER_S``; a server asking for longer gets its error raised at once rather than a
  caller blocked for minutes. Otherwise back off exponentially with jitter, so that many
  clients failing together do not retry in lock-step.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Mapping

import httpx

from billing_ui.core import _constants as C

__all__ = [
    "backoff_delay",
    "is_retryable_exception",
    "is_retryable_status",
    "parse_retry_after",
    "retry_delay",
]

_RETRYABLE_4XX = frozenset({408, 409, 429})


def is_retryable_status(status_code: int) -> bool:
    """``408``, ``409``, ``429`` and every ``5xx``: statuses a later identical request may pass."""
    return status_code in _RETRYABLE_4XX or status_code >= 500


def is_retryable_exception(exc: BaseException) -> bool:
    """Transport failures worth another attempt: timeouts, network errors (refused, reset,
    read/write failures) and protocol errors (a connection closed before the response).

    Not retried: configuration mistakes such as an unsupported URL scheme or a bad proxy, which
    fail the same way every time.
    """
    return isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.ProtocolError)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds the server asks us to wait, or ``None`` when it does not say (or says nonsense).

    Reads ``retry-after-ms`` (milliseconds, as OpenAI and Anthropic send) first, then
    ``Retry-After`` as delta-seconds or an HTTP date (RFC 9110 §10.2.3). A date in the past
    means ``0.0``. Header names are matched case-insensitively, also for a plain ``dict``.
    """
    if not isinstance(headers, httpx.Headers):
        headers = {key.lower(): value for key, value in headers.items()}
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        ms = _non_negative_float(raw_ms)
        if ms is not None:
            return ms / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _non_negative_float(raw)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an RFC 850/asctime date: GMT by definition
        return None
    return max(0.0, when.timestamp() - time.time())


def _non_negative_float(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def backoff_delay(
    attempt: int,
    *,
    initial: float = C.INITIAL_RETRY_DELAY_S,
    maximum: float = C.MAX_RETRY_DELAY_S,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    ``initial`` doubling per attempt, capped at ``maximum``, then reduced by up to 25 % at
    random: 0.375-0.5 s, 0.75-1 s, 1.5-2 s … 6-8 s with the defaults.
    """
    base = min(initial * 2.0 ** min(max(attempt, 0), 32), maximum)
    return base * (1.0 - 0.25 * random.random())


def retry_delay(
    attempt: int,
    headers: Mapping[str, str] | None,
    *,
    initial: float = C.INITIAL_RETRY_DELAY_S,
    maximum: float = C.MAX_RETRY_DELAY_S,
    max_retry_after: float = C.MAX_RETRY_AFTER_S,
) -> float | None:
    """How long to wait before the next attempt, or ``None`` to give up now.

    A ``Retry-After`` is obeyed exactly when it is at most ``max_retry_after``; beyond that the
    caller gives up (``None``) instead of sleeping for minutes. Without one, :func:`backoff_delay`.
    """
    if headers is not None:
        asked = parse_retry_after(headers)
        if asked is not None:
            return asked if asked <= max_retry_after else None
    return backoff_delay(attempt, initial=initial, maximum=maximum)
