"""The client classifies BillingOS's errors by status and ``error.code``, and reads a message
only where BillingOS shares one code between cases — tested here against the exact messages
BillingOS sends (from its public source; docs/api.md, "Conformance with BillingOS").

The envelopes below are BillingOS's answers written out as values (a hosted BillingOS is not
reachable from the tests); the second half checks the same classes against the real local
server, which now sends the same envelopes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from billing_ui.core import errors as E
from billing_ui.core.errors import error_from_response

from .conftest import Api

NewCustomer = Callable[..., str]


def billingos(status: int, code: str, message: str, details: Any = None) -> httpx.Response:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    error |= {"requestId": "req_1", "timestamp": "2026-01-01T00:00:00.000Z"}
    return httpx.Response(
        status,
        json={"error": error, "statusCode": status},
        request=httpx.Request("GET", "https://api.example/v1/usage/track"),
    )


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    [
        (400, "VAL_INVALID_INPUT", "quota_exceeded", "QuotaExceededError"),
        (400, "VAL_INVALID_INPUT", "Customer not found: user_123", "CustomerNotFoundError"),
        (400, "VAL_INVALID_INPUT", "Customer not found", "CustomerNotFoundError"),
        (400, "VAL_INVALID_INPUT", "Feature is not a usage quota type", "InvalidRequestError"),
        (400, "VAL_INVALID_INPUT", "feature_key and quantity are required", "InvalidRequestError"),
        (400, "VAL_INVALID_INPUT", "Validation failed", "InvalidRequestError"),
        (404, "RES_NOT_FOUND", "No active subscription with this feature", "NotFoundError"),
        (401, "AUTH_INVALID_TOKEN", "Token expired", "AuthenticationError"),
        (429, "RATE_LIMIT_EXCEEDED", "Too Many Requests", "RateLimitError"),
        (422, "VAL_INVALID_INPUT", "Unprocessable", "UnprocessableEntityError"),
    ],
)
def test_status_and_code_decide_the_class(status, code, message, expected) -> None:
    error = error_from_response(billingos(status, code, message))
    assert type(error).__name__ == expected
    assert E.classify(status, code, message) is type(error)  # the one place that decides
    assert (error.status_code, error.code, error.message) == (status, code, message)


def test_a_validation_error_is_a_bad_request_with_its_fields() -> None:
    # The local server's list, and BillingOS's object (ValidationException.fromClassValidator).
    local = error_from_response(
        billingos(
            400,
            "VAL_INVALID_INPUT",
            "Invalid input: quantity must be greater than 0",
            {"fieldErrors": [{"field": "quantity", "rule": "gt_zero", "message": "must be > 0"}]},
        )
    )
    remote = error_from_response(
        billingos(
            400,
            "VAL_INVALID_INPUT",
            "Validation failed for one or more fields",
            {"fieldErrors": {"quantity": ["quantity must be a positive number"]}},
        )
    )
    for error in (local, remote):
        assert isinstance(error, E.BadRequestError) and isinstance(error, E.InvalidRequestError)
        assert [f.field for f in error.field_errors] == ["quantity"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("message", "stale"),
    [
        ("Token expired", True),
        ("Token not found or revoked", True),
        ("Invalid token signature", False),
        ("Invalid API key", False),
        ("Your trial has expired", False),  # a substring match would re-mint here
        ("Missing or invalid Authorization header", False),
    ],
)
def test_only_billingos_expired_and_revoked_tokens_are_minted_again(message, stale) -> None:
    assert (
        E.is_stale_session(error_from_response(billingos(401, "AUTH_INVALID_TOKEN", message)))
        is stale
    )


async def test_the_local_server_sends_what_billingos_sends(api: Api, customer: NewCustomer) -> None:
    cid = customer("free")
    await api.track_usage(customer_id=cid, feature_key="seats", quantity=3)
    with pytest.raises(E.QuotaExceededError) as quota:
        await api.track_usage(customer_id=cid, feature_key="seats", quantity=1)
    assert (quota.value.code, quota.value.message) == ("VAL_INVALID_INPUT", "quota_exceeded")
    with pytest.raises(E.CustomerNotFoundError) as missing:
        await api.get_usage_metrics(customer_id="cus_ghost")
    assert missing.value.message == "Customer not found: cus_ghost"
    with pytest.raises(E.BadRequestError) as flag:
        await api.track_usage(customer_id=cid, feature_key="projects", quantity=1)
    assert type(flag.value).__name__ == "InvalidRequestError"
