"""A wrong secret key or an unreachable billing API is logged once for the operator, however
many requests fail, and again only after it recovered; users get one neutral sentence.

Real parts only: the real local server (which refuses a wrong key with 401) over loopback, and
a loopback port with nothing listening (a real refused connection)."""

from __future__ import annotations

import logging
import socket

import pytest

from billing_ui.core import AsyncBillingClient, AuthenticationError, BillingError
from billing_ui.core.problems import USER_MESSAGE, ProblemLog
from billing_ui.core.queries import BillingQueries
from billing_ui.server.testing import RunningServer

FAILURES = 25
LOGGER = "billing_ui.operator"


def closed_port_url() -> str:
    """A loopback URL nothing listens on (bound, then released: the OS refuses connections)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def operator_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


async def fail_many(queries: BillingQueries, customer: str) -> None:
    for _ in range(FAILURES):
        with pytest.raises(BillingError):
            await queries.usage_metrics(customer, stale_time=0)


async def test_a_wrong_key_is_logged_once_with_advice_then_its_recovery(
    billing_server: RunningServer, fresh_customer: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    wrong = AsyncBillingClient(
        base_url=billing_server.base_url, api_key="sk_test_wrong", max_retries=0
    )
    right = AsyncBillingClient(
        base_url=billing_server.base_url, api_key=billing_server.api_key, max_retries=0
    )
    current = [wrong]
    queries = BillingQueries(lambda: current[0], problems=ProblemLog())
    async with wrong, right:
        with pytest.raises(AuthenticationError):
            await queries.usage_metrics(fresh_customer, stale_time=0)
        await fail_many(queries, fresh_customer)
        # Tracks and checks failing the same way add no line either.
        with pytest.raises(AuthenticationError):
            await queries.track_usage(fresh_customer, "api_calls", 1)
        with pytest.raises(AuthenticationError):
            await queries.feature_check(fresh_customer, "sso", stale_time=0)

        errors = operator_lines(caplog, logging.ERROR)
        assert len(errors) == 1, errors
        assert "BILLINGOS_SECRET_KEY" in errors[0] and billing_server.base_url in errors[0]
        assert "sk_test_wrong" not in errors[0], "the log must not repeat the secret"
        assert queries.problems.open_problems() == {"credentials": FAILURES + 3}

        current[0] = right
        await queries.usage_metrics(fresh_customer, stale_time=0)
        await queries.usage_metrics(fresh_customer, stale_time=0)
        recovered = operator_lines(caplog, logging.WARNING)
        assert len(recovered) == 1 and f"after {FAILURES + 3} failed requests" in recovered[0]

        current[0] = wrong  # a new outage is a new problem: logged again, once
        await fail_many(queries, fresh_customer)
        assert len(operator_lines(caplog, logging.ERROR)) == 2


async def test_an_unreachable_api_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    url = closed_port_url()
    async with AsyncBillingClient(base_url=url, api_key="sk_test_x", max_retries=0) as client:
        queries = BillingQueries(client)
        await fail_many(queries, "cus_1")
    errors = operator_lines(caplog, logging.ERROR)
    assert len(errors) == 1, errors
    assert "unreachable" in errors[0] and "BILLINGOS_API_URL" in errors[0] and url in errors[0]
    assert "ConnectError" in errors[0], "the log says what actually happened"


def test_the_user_message_gives_no_operator_advice() -> None:
    for word in ("BILLINGOS", "secret", "key", "URL", "server"):
        assert word.lower() not in USER_MESSAGE.lower()
