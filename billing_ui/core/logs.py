"""Structured logs: one record per upstream call, and a JSON formatter an app can install.

Why stdlib ``logging`` and not structlog: every Python app already routes ``logging`` (uvicorn,
Reflex, gunicorn, its own handlers), so records that are plain ``LogRecord`` s with their
fields as attributes (``extra=``) reach whatever the app has set up, structlog's
``ProcessorFormatter`` included, with no dependency. :class:`JsonFormatter` writes them as one
JSON object per line for an app without a log pipeline of its own.

What a record holds is chosen here, field by field, from the call's description: never the
headers (the secret key and session tokens travel only there) and never an error's text.

One call is one record, however many attempts it took (``attempts``) — the retries are in it::

    billing_ui.upstream INFO  track_usage 200 in 12.3 ms (1 attempt)
        customer=u_1 feature=api_calls operation=track_usage status=200 latency_ms=12.3
        attempts=1 idempotency_key=4f1c...
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, Final, TextIO

UPSTREAM_LOGGER: Final = "billing_ui.upstream"
upstream_log = logging.getLogger(UPSTREAM_LOGGER)

FIELDS: Final = (
    "customer",
    "feature",
    "operation",
    "status",
    "latency_ms",
    "attempts",
    "idempotency_key",
    "events",
)
"""The structured fields of an upstream-call record (and of the local server's request
records, which add ``method``, ``path`` and ``request_id``)."""


def call_fields(
    operation: str,
    *,
    customer: str | None,
    body: Any,
    params: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Who and what a call is about, from its query or JSON body (both are the app's own
    arguments: ids, keys, quantities; never credentials)."""
    fields: dict[str, Any] = {"operation": operation}
    source: Mapping[str, Any] = {}
    if isinstance(body, Mapping):
        source = body
    elif params:
        source = params
    fields["customer"] = customer or source.get("customer_id") or source.get("externalUserId")
    fields["feature"] = source.get("feature_key")
    fields["idempotency_key"] = source.get("idempotency_key")
    events = source.get("events")
    if isinstance(events, list):
        fields["events"] = len(events)
        customers = {e.get("customer_id") for e in events if isinstance(e, Mapping)}
        features = {e.get("feature_key") for e in events if isinstance(e, Mapping)}
        fields["customer"] = customers.pop() if len(customers) == 1 else None
        fields["feature"] = features.pop() if len(features) == 1 else None
    return fields


def log_upstream(
    fields: dict[str, Any], *, status: int | str, seconds: float, attempts: int
) -> None:
    """One INFO record for a finished call, answered or not (a failure the app must hear
    about is logged once more, as an ERROR, by :mod:`billing_ui.core.problems`)."""
    level = logging.INFO
    if not upstream_log.isEnabledFor(level):
        return
    latency_ms = round(seconds * 1000, 2)
    record = {**fields, "status": status, "latency_ms": latency_ms, "attempts": attempts}
    upstream_log.log(
        level,
        "%s %s in %.1f ms (%d attempt%s)",
        fields.get("operation"),
        status,
        latency_ms,
        attempts,
        "" if attempts == 1 else "s",
        extra=record,
    )


# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts``, ``level``, ``logger``, ``message``, every
    ``extra=`` field, and ``exc`` when there is an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def install_json_logging(
    logger: str = "billing_ui", *, level: int = logging.INFO, stream: TextIO | None = None
) -> logging.Handler:
    """Send ``logger`` 's records (billing_ui's by default) to ``stream`` (stderr) as JSON
    lines. Returns the handler, so the app can remove it. An app with its own pipeline needs
    none of this: the fields are attributes of each record."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    target = logging.getLogger(logger)
    target.addHandler(handler)
    target.setLevel(level)
    return handler
