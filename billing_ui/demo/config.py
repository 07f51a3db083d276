"""The demo's billing configuration, read from the environment once, at import.

| variable                       | effect                                                        |
|--------------------------------|---------------------------------------------------------------|
| ``BILLINGOS_API_URL``          | talk to this billing API (a hosted BillingOS, or a server the  |
|                                | tests started); unset: start the embedded local server         |
| ``BILLINGOS_SECRET_KEY``       | its secret key (the local server's default otherwise)         |
| ``BILLING_UI_REFRESH_INTERVAL``| seconds between usage refreshes (default 30; the tests use 1) |
| ``BILLING_UI_DB``              | the embedded server's SQLite file (``.data/billing.db``)      |
| ``BILLING_UI_PORT``            | the embedded server's port (default 8700, or a free one)      |
| ``BILLING_UI_DEMO_CUSTOMERS``  | the customers the sign-in page offers (comma-separated)       |
| ``BILLING_UI_OUTBOX_DB``       | the track outbox's SQLite file (default ``billing_outbox.db`` |
|                                | beside the billing database; ``make clean`` removes both)      |
| ``BILLING_UI_METRICS_PATH``    | serve Prometheus metrics at this backend path (``/metrics``)  |
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core import _constants as C
from billing_ui.core.tracker import UsageTracker
from billing_ui.demo import embedded
from billing_ui.demo.session import demo_customer
from billing_ui.settings import TrackRule, configure

ENV_REFRESH: Final = "BILLING_UI_REFRESH_INTERVAL"
ENV_OUTBOX: Final = "BILLING_UI_OUTBOX_DB"
ENV_METRICS: Final = "BILLING_UI_METRICS_PATH"
OUTBOX_FILE: Final = "billing_outbox.db"
DEFAULT_REFRESH_S: Final = 30.0

TRACKABLE: Final = {
    "api_calls": TrackRule(max_quantity=10),
    "ai_tokens": TrackRule(max_quantity=1000),
    "storage_gb": TrackRule(max_quantity=1, integer_only=False),
    "seats": TrackRule(max_quantity=1),
    "report_exports": TrackRule(max_quantity=1),
}
"""What the demo's buttons may track: the allowlist every browser request is checked against."""


def refresh_interval() -> float:
    raw = os.environ.get(ENV_REFRESH, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_REFRESH_S
    except ValueError as exc:
        raise ValueError(f"{ENV_REFRESH} must be a number of seconds, not {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{ENV_REFRESH} must be greater than 0")
    return value


def base_url() -> str:
    """The billing API the demo talks to: ``BILLINGOS_API_URL``, else the embedded server."""
    return os.environ.get(C.ENV_BASE_URL, "").strip() or embedded.base_url()


def make_client() -> AsyncBillingClient:
    # One per event loop (the states' settings call this lazily). The key comes from
    # BILLINGOS_SECRET_KEY when set; the local server's well-known test key otherwise.
    key = os.environ.get(C.ENV_SECRET_KEY) or C.LOCAL_SECRET_KEY
    return AsyncBillingClient(base_url=base_url(), api_key=key)


def metrics_path() -> str | None:
    """``BILLING_UI_METRICS_PATH`` (e.g. ``/metrics``): serve Prometheus metrics there."""
    return os.environ.get(ENV_METRICS, "").strip() or None


def outbox_path() -> Path:
    """``BILLING_UI_OUTBOX_DB``, else ``billing_outbox.db`` beside the billing database."""
    raw = os.environ.get(ENV_OUTBOX, "").strip()
    return Path(raw).resolve() if raw else embedded.db_path().with_name(OUTBOX_FILE)


_tracker: list[UsageTracker] = []


def make_tracker() -> UsageTracker:
    """The demo's durable outbox: a track the billing API cannot take now (down, 5xx, 429)
    is kept on disk with its key and sent by the tracker's worker when it is back; the
    button says "Queued, will be sent (N waiting)" and the meter shows "+N pending". One per
    process: a previous one (an earlier set-up in the same process) is shut down first."""
    close_tracker()
    key = os.environ.get(C.ENV_SECRET_KEY) or C.LOCAL_SECRET_KEY
    client = BillingClient(base_url=base_url(), api_key=key, timeout=5.0)
    path = outbox_path()
    path.parent.mkdir(parents=True, exist_ok=True)  # .data/ on a fresh checkout
    _tracker.append(UsageTracker(client, outbox_path=path, flush_interval=1.0))
    return _tracker[0]


def close_tracker() -> None:
    """Stop the demo's tracker (its last flush included): a test's teardown."""
    while _tracker:
        _tracker.pop().shutdown(timeout=2.0)


@contextlib.asynccontextmanager
async def tracker_lifespan() -> AsyncIterator[None]:
    """Reflex lifespan task: the demo's tracker (its outbox file and worker thread) lives
    exactly as long as the backend. Not made at import: ``reflex run`` also imports the app in
    its compiling process, which must create neither (nor would anything stop that thread)."""
    tracker = await asyncio.to_thread(make_tracker)
    configure(track_outbox=tracker)
    try:
        yield
    finally:
        configure(track_outbox=None)
        await asyncio.to_thread(close_tracker)


def setup() -> None:
    """Configure the billing states for the demo (idempotent). The track outbox comes with
    the backend's lifespan (:func:`tracker_lifespan`), not here."""
    configure(
        customer_resolver=demo_customer,
        trackable=TRACKABLE,
        refresh_interval=refresh_interval(),
        client_factory=make_client,
    )


def uses_embedded_server() -> bool:
    return not os.environ.get(C.ENV_BASE_URL, "").strip()
