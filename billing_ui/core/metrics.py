"""Prometheus metrics of the app side (``prometheus_client``): what an operator graphs.

* ``billing_ui_tracks_total{result}`` — tracks (events, not requests) by what became of them:
  ``recorded``, ``refused`` (a final 4xx, or an event a batch answered with an error),
  ``failed`` (no answer, 5xx, 429 after the retries), ``queued`` (kept by the outbox);
* ``billing_ui_upstream_retries_total{operation}`` — extra attempts the client made;
* ``billing_ui_upstream_request_seconds{operation,outcome}`` — latency of each call, all
  attempts included (``outcome``: ``2xx``, ``4xx``, ``5xx``, ``error``);
* ``billing_ui_outbox_depth``, ``billing_ui_outbox_oldest_age_seconds``,
  ``billing_ui_outbox_overdue``, ``billing_ui_outbox_failed``, and the lifetime
  ``billing_ui_outbox_delivered_total`` / ``billing_ui_outbox_refused_total`` — read from the
  outbox's store at scrape time, so they are true across restarts and workers;
* ``billing_ui_cache_hits_total`` / ``billing_ui_cache_fetches_total`` /
  ``billing_ui_cache_joined_total`` — the query store's own counters, read at scrape time;
* ``billing_ui_polling_tabs`` — tabs whose usage loop is running;
* ``billing_ui_tab_states`` — tabs whose states this worker keeps in memory, and
  ``billing_ui_tab_states_released_total`` — closed tabs' states it dropped from memory (they
  stay on disk), both on Reflex's disk state manager, by
  ``billing_ui.server_memory.release_closed_tabs`` at each sweep.

Why one :class:`BillingMetrics` object with its own registry, made current by the runtime
(:func:`use`), instead of metrics on the global registry: two runtimes (two apps, or two tests)
in one process each count their own, and the module-level metric objects of
``prometheus_client``'s default registry cannot be registered twice. The code that records
reads :func:`current` at the moment it records, so it needs no reference to pass around.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from billing_ui.core.models import BatchItemResult
    from billing_ui.core.outbox import Outbox

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def outcome_of(status: int | str) -> str:
    """The latency histogram's ``outcome`` label for a status (an int) or an error name."""
    if isinstance(status, int):
        return f"{status // 100}xx"
    return "error"


class BillingMetrics:
    """The app side's metrics on one registry (a new one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.tracks = Counter(
            "billing_ui_tracks", "Tracks by what became of them.", ["result"], registry=r
        )
        self.retries = Counter(
            "billing_ui_upstream_retries",
            "Extra attempts of billing API calls.",
            ["operation"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "billing_ui_upstream_request_seconds",
            "Billing API calls, every attempt included.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.polling_tabs = Gauge(
            "billing_ui_polling_tabs", "Tabs whose usage loop is running.", registry=r
        )
        self.tab_states = Gauge(
            "billing_ui_tab_states",
            "Tabs whose states this worker keeps in memory (Reflex's disk state manager).",
            registry=r,
        )
        self.tab_states_released = Counter(
            "billing_ui_tab_states_released",
            "Closed tabs' states dropped from this worker's memory (still on disk).",
            registry=r,
        )
        self._latency: dict[tuple[str, str], Any] = {}
        self._tracks: dict[str, Any] = {}
        self._sources = _Sources()
        r.register(self._sources)

    def observe_call(
        self, operation: str, status: int | str, seconds: float, attempts: int, events: int
    ) -> None:
        """Record one finished billing API call (``events``: tracks it carried, counted by the
        call's status; a batch that was answered counts its events itself, per event, with
        :meth:`count_tracks`, and passes 0). The labelled
        series are kept once made (``labels()`` validates and locks on every call: it was
        most of the cost, on the path of every track)."""
        key = (operation, outcome_of(status))
        series = self._latency.get(key)
        if series is None:
            series = self._latency[key] = self.upstream_seconds.labels(*key)
        series.observe(seconds)
        if attempts > 1:
            self.retries.labels(operation).inc(attempts - 1)
        if events:
            self.count_tracks(track_result(status), events)

    def count_tracks(self, result: str, events: int = 1) -> None:
        """Count ``events`` tracks in ``billing_ui_tracks_total{result}``: one per event, so a
        batch counts each of its events by what became of that event."""
        counter = self._tracks.get(result)
        if counter is None:
            counter = self._tracks[result] = self.tracks.labels(result)
        counter.inc(events)

    def watch_outbox(self, outbox: Outbox) -> None:
        """Report this outbox's depth and age (read at each scrape; kept weakly)."""
        self._sources.outboxes[id(outbox)] = outbox

    def watch_store(self, store: Any) -> None:
        """Report this query store's ``stats`` (hits, fetches, joined; kept weakly)."""
        self._sources.stores[id(store)] = store

    def render(self) -> bytes:
        """The text exposition format, for a ``/metrics`` response (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


def count_batch(items: Sequence[BatchItemResult], sent: int) -> None:
    """``billing_ui_tracks_total`` for an answered batch of ``sent`` events, per event: an item
    without error was recorded, one with an error was refused (the server applies each event
    on its own, and its item errors are final), an event the answer left out failed."""
    ok = sum(1 for item in items if item.error is None)
    counts = (("recorded", ok), ("refused", len(items) - ok), ("failed", sent - len(items)))
    for result, count in counts:
        if count > 0:
            current().count_tracks(result, count)


def track_result(status: int | str) -> str:
    """``recorded``, ``refused`` (final) or ``failed`` (retryable: 5xx, 429, no answer)."""
    if isinstance(status, int):
        if status < 300:
            return "recorded"
        if status != 429 and status < 500 and status != 408:
            return "refused"
    return "failed"


class _Sources(Collector):
    """Figures read from their owners at scrape time (outbox stores, query stores)."""

    def __init__(self) -> None:
        # by id: a dataclass store is not hashable
        self.outboxes: weakref.WeakValueDictionary[int, Outbox] = weakref.WeakValueDictionary()
        self.stores: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()

    def describe(self) -> list[Metric]:
        return []  # figures appear when an owner is watched

    def collect(self) -> Iterator[Metric]:
        if self.outboxes:
            yield from self._outbox()
        if self.stores:
            yield from self._cache()

    def _outbox(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("billing_ui_outbox_depth", "Tracks waiting in the outbox.")
        age = GaugeMetricFamily(
            "billing_ui_outbox_oldest_age_seconds", "Age of the oldest waiting track."
        )
        overdue = GaugeMetricFamily(
            "billing_ui_outbox_overdue", "Waiting tracks older than the outbox's max age."
        )
        failed = GaugeMetricFamily(
            "billing_ui_outbox_failed", "Queued tracks the API refused for good (kept)."
        )
        delivered = CounterMetricFamily(
            "billing_ui_outbox_delivered", "Queued tracks delivered (lifetime)."
        )
        refused = CounterMetricFamily(
            "billing_ui_outbox_refused", "Queued tracks refused for good (lifetime)."
        )
        totals = [0.0] * 6
        for outbox in list(self.outboxes.values()):
            try:
                s = outbox.stats()
            except Exception:  # a scrape must not fail because one store is unreachable
                continue
            for i, value in enumerate(
                (s.depth, s.oldest_age_s, s.overdue, s.failed, s.delivered, s.failed_total)
            ):
                totals[i] = max(totals[i], value) if i == 1 else totals[i] + value
        families: tuple[GaugeMetricFamily | CounterMetricFamily, ...] = (
            depth,
            age,
            overdue,
            failed,
            delivered,
            refused,
        )
        for family, value in zip(families, totals, strict=True):
            family.add_metric([], value)
            yield family

    def _cache(self) -> Iterator[Metric]:
        hits = fetches = joined = 0
        for store in list(self.stores.values()):
            stats = store.stats
            hits, fetches = hits + stats.hits, fetches + stats.fetches
            joined += stats.joined
        for name, value, text in (
            ("hits", hits, "Query-store reads answered from the store."),
            ("fetches", fetches, "Query-store reads that fetched from the billing API."),
            ("joined", joined, "Reads that waited on another reader's fetch."),
        ):
            family = CounterMetricFamily(f"billing_ui_cache_{name}", text)
            family.add_metric([], value)
            yield family


_current: BillingMetrics | None = None


def current() -> BillingMetrics:
    """The metrics being recorded into (the installed runtime's; a default one until then)."""
    global _current
    if _current is None:
        _current = BillingMetrics()
    return _current


def use(metrics: BillingMetrics) -> BillingMetrics:
    """Record into ``metrics`` from now on (``billing_ui.install`` does this)."""
    global _current
    _current = metrics
    return metrics


class polling_tab:
    """``with polling_tab(): ...`` counts a running usage loop in ``billing_ui_polling_tabs``
    (the metrics object is taken once, so the gauge goes back down where it went up)."""

    def __init__(self) -> None:
        self._gauge = current().polling_tabs

    def __enter__(self) -> None:
        self._gauge.inc()

    def __exit__(self, *_: object) -> None:
        self._gauge.dec()


ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def serve_metrics(inner: ASGIApp, path: str = "/metrics") -> ASGIApp:
    """``inner`` with ``GET path`` answered by :func:`current` 's metrics (pure ASGI, so the
    core needs no web framework): how a Reflex app's backend serves them (``metrics_path``)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != path or scope["method"] != "GET":
            await inner(scope, receive, send)
            return
        body = current().render()
        headers = [(b"content-type", CONTENT_TYPE.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app
