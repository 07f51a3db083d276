"""The retry policy as pure functions: what is retried, how long to wait, how ``Retry-After``
is read. (The same policy against real failures: test_client_faults.py.)"""

from __future__ import annotations

import time
from email.utils import formatdate

import httpx
import pytest

from billing_ui.core import _constants as C
from billing_ui.core._retry import (
    backoff_delay,
    is_retryable_exception,
    is_retryable_status,
    parse_retry_after,
    retry_delay,
)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 410, 413, 415, 422, 451])
def test_other_client_errors_are_never_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_transport_failures_are_retried_but_not_configuration_mistakes() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    assert is_retryable_exception(httpx.ConnectError("refused", request=request))
    assert is_retryable_exception(httpx.ReadTimeout("slow", request=request))
    assert is_retryable_exception(httpx.RemoteProtocolError("closed", request=request))
    assert not is_retryable_exception(httpx.UnsupportedProtocol("ftp", request=request))
    assert not is_retryable_exception(ValueError("not a transport error"))


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "1"}, 1.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": " 0 "}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),  # the precise one wins
        ({"retry-after-ms": "nonsense", "retry-after": "3"}, 3.0),
        ({}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0),  # a date in the past
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers) == expected
    assert parse_retry_after(httpx.Headers(headers)) == expected


def test_parse_retry_after_http_date_in_the_future() -> None:
    when = formatdate(time.time() + 30, usegmt=True)
    seconds = parse_retry_after({"Retry-After": when})
    assert seconds is not None and 28 <= seconds <= 30


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    for attempt, nominal in enumerate([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]):
        for _ in range(50):
            delay = backoff_delay(attempt)
            assert nominal * 0.75 <= delay <= nominal
    assert backoff_delay(10_000) <= C.MAX_RETRY_DELAY_S  # no overflow on absurd attempts
    assert 0.0075 <= backoff_delay(0, initial=0.01, maximum=0.02) <= 0.01
    assert backoff_delay(5, initial=0.01, maximum=0.02) <= 0.02


def test_jitter_actually_varies() -> None:
    assert len({backoff_delay(2) for _ in range(20)}) > 1


def test_retry_after_is_obeyed_up_to_the_cap_and_beyond_it_we_give_up() -> None:
    assert retry_delay(0, httpx.Headers({"Retry-After": "1"})) == 1.0
    assert retry_delay(0, {"Retry-After": str(C.MAX_RETRY_AFTER_S)}) == C.MAX_RETRY_AFTER_S
    assert retry_delay(0, {"Retry-After": str(C.MAX_RETRY_AFTER_S + 1)}) is None
    delay = retry_delay(1, {})
    assert delay is not None and 0.75 <= delay <= 1.0
