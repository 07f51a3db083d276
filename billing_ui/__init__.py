"""billing_ui: usage-based billing for Python web apps — the Python answer to the BillingOS
React SDK.

* ``billing_ui.core``: the billing API clients, models and errors (no UI framework);
* ``billing_ui.states``: Reflex states playing the role of the SDK's hooks;
* ``billing_ui.components``: the dashboard components (meters, gates, nudges, charts);
* ``billing_ui.server``: an embedded, BillingOS-compatible local billing server.

Everything public is importable from here, **lazily**: ``import billing_ui`` (or
``billing_ui.core``, or the server) imports no Reflex, and neither do the core names
(``billing_ui.BillingClient``); the first use of a component, a state or ``configure`` does::

    import billing_ui

    billing_ui.configure(customer_resolver=current_user_id,
                         trackable={"api_calls": billing_ui.TrackRule(max_quantity=10)})
    billing_ui.usage_dashboard()          # imports Reflex here
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_COMPONENTS = (
    "entitlements_list",
    "feature_gate",
    "meter_bar",
    "track_button",
    "upgrade_nudge",
    "upgrade_prompt",
    "usage_chart",
    "usage_dashboard",
    "usage_meter",
)
_STATES = (
    "FeatureEntitlementsState",
    "TrackUsageState",
    "UsageMetricsState",
    "reset_billing_states",
    "switches_customer",
    "validate_browser_track",
)
_CORE = (
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBillingClient",
    "AuthenticationError",
    "BadRequestError",
    "BillingClient",
    "BillingError",
    "CustomerNotFoundError",
    "FeatureCheck",
    "FeatureEntitlement",
    "InvalidInputError",
    "NotFoundError",
    "PoolExhaustedError",
    "QuotaExceededError",
    "RateLimitError",
    "TrackUsageResult",
    "UsageHistory",
    "UsageMetric",
)
_WHERE: dict[str, str] = {
    **dict.fromkeys(_COMPONENTS, "billing_ui.components"),
    **dict.fromkeys(_STATES, "billing_ui.states"),
    "UsageHistoryState": "billing_ui.states.history",
    "UpgradeNudgeState": "billing_ui.states.nudge",
    "BillingState": "billing_ui.states.base",
    "billing_event": "billing_ui.states.base",
    "BillingSettings": "billing_ui.settings",
    "BillingRuntime": "billing_ui.runtime",
    "install": "billing_ui.runtime",
    "TrackRule": "billing_ui.core.track_rules",
    "configure": "billing_ui.settings",
    "get_settings": "billing_ui.settings",
    **dict.fromkeys(_CORE, "billing_ui.core"),
}

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncBillingClient",
    "AuthenticationError",
    "BadRequestError",
    "BillingClient",
    "BillingError",
    "BillingRuntime",
    "BillingSettings",
    "BillingState",
    "CustomerNotFoundError",
    "FeatureCheck",
    "FeatureEntitlement",
    "FeatureEntitlementsState",
    "InvalidInputError",
    "NotFoundError",
    "PoolExhaustedError",
    "QuotaExceededError",
    "RateLimitError",
    "TrackRule",
    "TrackUsageResult",
    "TrackUsageState",
    "UpgradeNudgeState",
    "UsageHistory",
    "UsageHistoryState",
    "UsageMetric",
    "UsageMetricsState",
    "__version__",
    "billing_event",
    "configure",
    "entitlements_list",
    "feature_gate",
    "get_settings",
    "install",
    "meter_bar",
    "reset_billing_states",
    "switches_customer",
    "track_button",
    "upgrade_nudge",
    "upgrade_prompt",
    "usage_chart",
    "usage_dashboard",
    "usage_meter",
    "validate_browser_track",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562); any other name of ``billing_ui.core``'s
    ``__all__`` (every model and error) is served too."""
    module = _WHERE.get(name)
    if module is None:
        core = importlib.import_module("billing_ui.core")
        if name not in getattr(core, "__all__", ()):
            raise AttributeError(f"module 'billing_ui' has no attribute {name!r}")
        module = "billing_ui.core"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and IDEs see; never executed
    from billing_ui.components import (
        entitlements_list,
        feature_gate,
        meter_bar,
        track_button,
        upgrade_nudge,
        upgrade_prompt,
        usage_chart,
        usage_dashboard,
        usage_meter,
    )
    from billing_ui.core import (
        APIConnectionError,
        APIError,
        APIStatusError,
        APITimeoutError,
        AsyncBillingClient,
        AuthenticationError,
        BadRequestError,
        BillingClient,
        BillingError,
        CustomerNotFoundError,
        FeatureCheck,
        FeatureEntitlement,
        InvalidInputError,
        NotFoundError,
        PoolExhaustedError,
        QuotaExceededError,
        RateLimitError,
        TrackUsageResult,
        UsageHistory,
        UsageMetric,
    )
    from billing_ui.core.track_rules import TrackRule
    from billing_ui.runtime import BillingRuntime, install
    from billing_ui.settings import BillingSettings, configure, get_settings
    from billing_ui.states import (
        FeatureEntitlementsState,
        TrackUsageState,
        UsageMetricsState,
        reset_billing_states,
        switches_customer,
        validate_browser_track,
    )
    from billing_ui.states.base import BillingState, billing_event
    from billing_ui.states.history import UsageHistoryState
    from billing_ui.states.nudge import UpgradeNudgeState
