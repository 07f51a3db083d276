"""The demo's billing configuration, read from the environment once, at import.

| variable                       | effect                                                        |
|--------------------------------|---------------------------------------------------------------|
| ``BILLINGOS_API_URL``          | talk to this billing API (a hosted BillingOS, or a server the  |
|                                | tests started); unset: start the embedded local server         |
| ``BILLINGOS_SECRET_KEY``       | its secret key (the local server's default otherwise)         |
| ``BILLING_UI_REFRESH_INTERVAL``| seconds between usage refreshes (default 30; the tests use 1) |
| ``BILLING_UI_DB``              | the embedded server's SQLite file (default ``./billing.db``)  |
| ``BILLING_UI_PORT``            | the embedded server's port (default 8700, or a free one)      |
| ``BILLING_UI_DEMO_CUSTOMERS``  | the customers the sign-in page offers (comma-separated)       |
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import os
from typing import Final

from billing_ui.core import AsyncBillingClient
from billing_ui.core import _constants as C
from billing_ui.demo import embedded
from billing_ui.demo.session import demo_customer
from billing_ui.settings import TrackRule, configure

ENV_REFRESH: Final = "BILLING_UI_REFRESH_INTERVAL"
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


def setup() -> None:
    """Configure the billing states for the demo (idempotent)."""
    configure(
        customer_resolver=demo_customer,
        trackable=TRACKABLE,
        refresh_interval=refresh_interval(),
        client_factory=make_client,
    )


def uses_embedded_server() -> bool:
    return not os.environ.get(C.ENV_BASE_URL, "").strip()
