"""What an operator of the local server sees: a structured log record per request, Prometheus
metrics at ``/metrics``, and ``/healthz`` / ``/readyz``.

* The request record has the fields of the client's upstream record (``customer``,
  ``feature``, ``operation``, ``status``, ``latency_ms``, ``idempotency_key``, ``events``; see
  :mod:`billing_ui.core.logs`) plus ``method``, ``path`` and ``request_id``. They are read from
  the query and, only when the record will be written, from the JSON body the route already
  received (a copy of at most :data:`MAX_LOGGED_BODY` bytes); the customer of a session route
  comes from its verified token. Headers are never read, so neither the secret key nor a
  session token can reach a log line.
* Metrics: ``billing_server_requests`` (a latency histogram by operation and status class),
  ``billing_server_tracks_total{result}`` (``recorded``, ``duplicate``, ``refused``), and the
  group commit's transactions, events and write CPU seconds (``billing_server_group_commit_*``:
  the mean group size, and what the durable write costs per event inside the serving
  process), on a registry of the app's own (tests run many servers in one process).

The same layer gives each request its id (:mod:`billing_ui.server.middleware`) before anything
else runs, so the record, the error envelope and the ``x-request-id`` header share it. Pure
ASGI, and one layer rather than two: no task or queue per request, one ``send`` wrapper.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any, Final, Protocol
from urllib.parse import parse_qsl

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from billing_ui.core.logs import call_fields
from billing_ui.core.metrics import LATENCY_BUCKETS, outcome_of
from billing_ui.server.middleware import new_request_id, with_request_id

request_log = logging.getLogger("billing_ui.server.requests")
MAX_LOGGED_BODY: Final = 64 * 1024
TRACK_OPERATIONS: Final = frozenset({"track_usage", "session_track_usage", "track_usage_batch"})


class ServerMetrics:
    """The local server's metrics on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Histogram(
            "billing_server_request_seconds",
            "Requests served, by operation and status class.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tracks = Counter(
            "billing_server_tracks", "Tracked events by result.", ["result"], registry=self.registry
        )
        self._series: dict[tuple[str, int], Histogram] = {}
        self._results: dict[str, Counter] = {}

    def observe(self, operation: str, status: int, seconds: float) -> None:
        """One request in the latency histogram (its labelled series found once per operation
        and status, then kept: ``labels()`` costs a lock and a tuple per call, on every
        request)."""
        series = self._series.get((operation, status))
        if series is None:
            series = self.requests.labels(operation, outcome_of(status))
            self._series[(operation, status)] = series
        series.observe(seconds)

    def count(self, recorded: int, duplicate: int, refused: int) -> None:
        """Tracked events by result (``billing_server_tracks_total``)."""
        for result, n in (("recorded", recorded), ("duplicate", duplicate), ("refused", refused)):
            if n:
                counter = self._results.get(result)
                if counter is None:  # created at its first event, as labels() would
                    counter = self._results[result] = self.tracks.labels(result)
                counter.inc(n)

    def watch_group_commit(self, writer: GroupWrites) -> None:
        """Expose ``writer``'s running totals (read at each scrape, nothing per request)."""
        self.registry.register(_GroupCommitCollector(writer))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GroupWrites(Protocol):
    """What :class:`~billing_ui.server.group_commit.GroupCommit` counts."""

    groups: int
    events: int
    write_cpu_s: float


GROUP_COMMIT_METRICS: Final = (
    ("billing_server_group_commits", "Group-commit transactions written.", "groups"),
    (
        "billing_server_group_commit_events",
        "Events decided in group commits (recorded, replayed or refused).",
        "events",
    ),
    (
        "billing_server_group_commit_cpu_seconds",
        "CPU seconds of the group commits' writes, in the serving process.",
        "write_cpu_s",
    ),
)
"""Name (``_total`` is added), help and :class:`GroupWrites` attribute of each counter."""


class _GroupCommitCollector:
    def __init__(self, writer: GroupWrites) -> None:
        self.writer = writer

    def collect(self) -> Iterator[Metric]:
        for name, documentation, attribute in GROUP_COMMIT_METRICS:
            yield CounterMetricFamily(name, documentation, value=getattr(self.writer, attribute))


def note(request: HTTPConnection, **fields: Any) -> None:
    """Add fields to the request's log record (from a route or a dependency)."""
    request.scope.setdefault("state", {}).setdefault("log_fields", {}).update(fields)


def count_tracks(
    request: HTTPConnection, *, recorded: int = 0, duplicate: int = 0, refused: int = 0
) -> None:
    """What a track route did with its events (for ``billing_server_tracks_total``)."""
    note(request, tracks=(recorded, duplicate, refused))


class ObservabilityMiddleware:
    """Gives each request its id, times it, then writes its log record and metrics."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = new_request_id()
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        logging_on = request_log.isEnabledFor(logging.INFO)
        body = bytearray()

        async def receive_copy() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) < MAX_LOGGED_BODY:
                body.extend(message.get("body", b"")[: MAX_LOGGED_BODY - len(body)])
            return message

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = with_request_id(message, rid)
            await send(message)

        try:
            await self.app(scope, receive_copy if logging_on else receive, send_status)
        finally:
            self._observe(scope, status, time.perf_counter() - started, bytes(body))

    def _observe(self, scope: Scope, status: int, seconds: float, body: bytes) -> None:
        endpoint = scope.get("endpoint")
        operation = getattr(endpoint, "__name__", "unmatched")
        state: dict[str, Any] = scope.get("state", {})
        noted: dict[str, Any] = state.get("log_fields", {})
        self.metrics.observe(operation, status, seconds)
        recorded, duplicate, refused = noted.get("tracks", (0, 0, 0))
        if operation in TRACK_OPERATIONS and status >= 400:
            refused = max(refused, 1)
        self.metrics.count(recorded, duplicate, refused)
        if not request_log.isEnabledFor(logging.INFO):
            return
        fields = call_fields(
            operation,
            customer=noted.get("customer"),
            body=_json_or_none(body),
            params=dict(parse_qsl(scope.get("query_string", b"").decode("latin-1"))),
        )
        route = scope.get("route")
        path = getattr(route, "path", None) or scope.get("path", "")
        latency_ms = round(seconds * 1000, 2)
        request_log.info(
            "%s %s %d in %.1f ms",
            scope.get("method"),
            path,
            status,
            latency_ms,
            extra={
                **fields,
                "method": scope.get("method"),
                "path": path,
                "status": status,
                "latency_ms": latency_ms,
                "request_id": state.get("request_id"),
            },
        )


def _json_or_none(body: bytes) -> Any:
    if not body:
        return None
    try:
        return json.loads(body)
    except ValueError:  # refused by the route already; the record has what the query gives
        return None
