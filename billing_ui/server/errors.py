"""The BillingOS error envelope, and the handlers that make every failure use it.

``{"error": {"code", "message", "details"?, "requestId", "timestamp"}, "statusCode"}`` with an
``x-request-id`` header — for refusals raised on purpose (:class:`ApiProblem`), for FastAPI's
own validation errors, for unknown routes and methods, and for unexpected exceptions (a 500
that is logged with its request id and says nothing about internals).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from billing_ui.core.errors import BillingOSMessage, FieldError
from billing_ui.core.validation import field_errors_from_pydantic
from billing_ui.server.store import StoreBusyError

log = logging.getLogger("billing_ui.server")

REQUEST_ID_HEADER = "x-request-id"
_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


class ApiProblem(Exception):
    """A refusal with a status, a stable ``code`` and a message meant for the caller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers


def invalid_input(errors: Sequence[FieldError]) -> ApiProblem:
    """400 ``VAL_INVALID_INPUT`` (as BillingOS's validation pipe) listing every broken rule in
    ``details.fieldErrors``."""
    summary = "; ".join(f"{e.field} {e.message}" for e in errors[:3])
    return ApiProblem(
        400,
        "VAL_INVALID_INPUT",
        f"Invalid input: {summary}",
        details={
            "fieldErrors": [
                {"field": e.field, "rule": e.rule, "message": e.message} for e in errors
            ]
        },
    )


def bad_request(message: str, details: Mapping[str, Any] | None = None) -> ApiProblem:
    """A 400 refusal as BillingOS sends it: its exception filter gives every 400 the code
    ``VAL_INVALID_INPUT``, and the message (``quota_exceeded``, ``Customer not found: X``, …;
    see :class:`~billing_ui.core.errors.BillingOSMessage`) says which case it is."""
    return ApiProblem(400, "VAL_INVALID_INPUT", message, details=details)


def customer_not_found(customer_id: str | None = None) -> ApiProblem:
    """BillingOS's unknown customer: ``Customer not found: X`` on the secret-key endpoints,
    plain ``Customer not found`` on the session track endpoint."""
    message = BillingOSMessage.CUSTOMER_NOT_FOUND
    return bad_request(message if customer_id is None else f"{message}: {customer_id}")


def unauthorized(message: str) -> ApiProblem:
    return ApiProblem(401, "AUTH_INVALID_TOKEN", message, headers={"WWW-Authenticate": "Bearer"})


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    return rid if isinstance(rid, str) else "req_unknown"


def envelope(
    request_id: str,
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = dict(details)
    error["requestId"] = request_id
    error["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"error": error, "statusCode": status}


def problem_response(request: Request, problem: ApiProblem) -> Response:
    rid = request_id_of(request)
    body = envelope(rid, problem.status, problem.code, problem.message, problem.details)
    headers = {REQUEST_ID_HEADER: rid, **(problem.headers or {})}
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=problem.status,
        headers=headers,
        media_type="application/json",
    )


async def _on_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return problem_response(request, exc)


async def _on_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        FieldError(_strip_location(e.field), e.rule, e.message)
        for e in field_errors_from_pydantic(exc)
    ]
    return problem_response(
        request, invalid_input(errors or [FieldError("body", "invalid", "is invalid")])
    )


def _strip_location(field: str) -> str:
    head, _, rest = field.partition(".")
    return rest if head in _LOCATIONS and rest else field


async def _on_http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code in (404, 405):
        # Express (under NestJS) has no 405: an unknown method on a known path is a 404 too.
        problem = ApiProblem(404, "RES_NOT_FOUND", f"Cannot {request.method} {request.url.path}")
    else:
        code = "SYS_ERROR" if exc.status_code >= 500 else "REQUEST_ERROR"
        problem = ApiProblem(exc.status_code, code, str(exc.detail), headers=exc.headers)
    return problem_response(request, problem)


async def _on_busy(request: Request, exc: Exception) -> Response:
    problem = ApiProblem(
        503,
        "SYS_DATABASE_BUSY",
        "The billing database is busy (another process is writing); retry shortly",
        headers={"Retry-After": "1"},
    )
    return problem_response(request, problem)


async def _on_crash(request: Request, exc: Exception) -> Response:
    rid = request_id_of(request)
    log.exception("unhandled error in %s %s (request %s)", request.method, request.url.path, rid)
    return problem_response(
        request,
        ApiProblem(500, "SYS_INTERNAL_ERROR", f"Internal server error (request {rid})"),
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(StoreBusyError, _on_busy)
    app.add_exception_handler(Exception, _on_crash)
