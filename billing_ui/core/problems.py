"""Billing API problems an operator must fix, logged once, in the app's server log.

A wrong secret key or an unreachable billing API fails every request of every tab, every
interval. Logging each failure would bury the one line that says what to do; showing that line
to the end user would leak operator advice (and hint at the setup) to a customer who can do
nothing about it. So the UI says only "billing is temporarily unavailable", and this module
writes one clear ``ERROR`` per problem with the advice, then stays quiet until a request
succeeds again (logged once too, with the number of failed requests in between). A later
outage is logged again.

Framework-agnostic: :class:`~billing_ui.core.queries.BillingQueries` reports every upstream
call's outcome here, so a FastAPI or Django app using the queries gets the same log.
"""

from __future__ import annotations

import logging
import threading
from typing import Final, Literal

from billing_ui.core import errors

log = logging.getLogger("billing_ui.operator")

Problem = Literal["credentials", "unreachable", "overloaded", "not_a_billing_api", "server_error"]

ADVICE: Final[dict[Problem, str]] = {
    "credentials": (
        "the billing API at {url} refused our secret key ({detail}). Check "
        "BILLINGOS_SECRET_KEY (or the api_key your client_factory passes) and that it belongs "
        "to this API's environment (sk_test_ vs sk_live_)"
    ),
    "unreachable": (
        "the billing API at {url} is unreachable ({detail}). Check BILLINGOS_API_URL (or the "
        "base_url your client_factory passes) and that the server is up"
    ),
    "overloaded": (
        "no connection to the billing API at {url} came free in time: this app sends more calls "
        "than its connection pool serves (a burst, or an API slower than the browsers); the API "
        "itself may be fine ({detail}). Calls that found no connection were not sent"
    ),
    "not_a_billing_api": (
        "{url} answered with something that is not this billing API ({detail}). Check "
        "BILLINGOS_API_URL (or the base_url your client_factory passes)"
    ),
    "server_error": "the billing API at {url} fails with server errors ({detail})",
}
"""What the operator is told, per problem. Never shown to a user."""

USER_MESSAGE: Final = "Billing is temporarily unavailable. Please try again in a few minutes."
"""What an end user is told about any of these problems: neutral, no setup details."""

BUSY_MESSAGE: Final = "Billing is busy right now. Please try again in a moment."
"""What an end user is told when the app itself is overloaded (``overloaded``): a moment, not
minutes, and nothing is down."""


def classify(exc: BaseException) -> Problem | None:
    """The operator problem behind ``exc``, or None for an ordinary answer (a quota, a bad
    input, an unknown customer: the API works). A :class:`~billing_ui.core.errors.
    RemoteFetchError` has the problem the fetching worker found."""
    if isinstance(exc, errors.RemoteFetchError):
        return next((p for p in ADVICE if p == exc.problem), None)
    if isinstance(exc, errors.AuthenticationError | errors.PermissionDeniedError):
        return "credentials"
    if isinstance(exc, errors.PoolExhaustedError):
        return "overloaded"
    if isinstance(exc, errors.APIConnectionError):
        return "unreachable"
    if isinstance(exc, errors.APIResponseValidationError):
        return "not_a_billing_api"
    if isinstance(exc, errors.APIStatusError) and exc.status_code >= 500:
        return "server_error"
    return None


class ProblemLog:
    """Logs the first failure of each problem and the recovery; counts the rest silently.
    Thread-safe: one instance serves every event loop of the process."""

    def __init__(self, logger: logging.Logger = log) -> None:
        self._log = logger
        self._lock = threading.Lock()
        self._failures: dict[Problem, int] = {}

    def failed(self, exc: BaseException) -> Problem | None:
        """Record a failed upstream call; log it if it starts a problem. Returns the problem."""
        problem = classify(exc)
        if problem is None:
            return None
        with self._lock:
            first = problem not in self._failures
            self._failures[problem] = self._failures.get(problem, 0) + 1
        if first:
            self._log.error(
                "billing_ui: %s. Users see %r. Logged once until it recovers.",
                ADVICE[problem].format(**_url_and_detail(exc)),
                BUSY_MESSAGE if problem == "overloaded" else USER_MESSAGE,
                extra={"billing_problem": problem},
            )
        return problem

    def succeeded(self) -> None:
        """Record a successful upstream call: every open problem is over (logged once)."""
        if not self._failures:  # the common case, without the lock
            return
        with self._lock:
            over, self._failures = self._failures, {}
        for problem, count in over.items():
            self._log.warning(
                "billing_ui: the billing API answers again (%s resolved after %d failed "
                "request%s).",
                problem,
                count,
                "" if count == 1 else "s",
                extra={"billing_problem": problem},
            )

    def open_problems(self) -> dict[Problem, int]:
        """The problems not yet recovered, with their failed-request counts."""
        with self._lock:
            return dict(self._failures)


def _url_and_detail(exc: BaseException) -> dict[str, str]:
    request = getattr(exc, "request", None)
    url = "(unknown URL)"
    if request is not None:
        # Scheme, host and port only: a path or query could carry a customer id or a token.
        url = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
    # A connection error's own text is advice already; its cause says what actually happened.
    cause = (
        exc.__cause__
        if isinstance(exc, errors.APIConnectionError | errors.PoolExhaustedError)
        else None
    )
    shown = cause if cause is not None else exc
    return {"url": url, "detail": f"{type(shown).__name__}: {shown}".rstrip(": ")}
