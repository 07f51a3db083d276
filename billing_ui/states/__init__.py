"""The BillingOS React hooks as Reflex states (see each module's docstring).

| React hook                  | state                          |
|-----------------------------|--------------------------------|
| ``useTrackUsage``           | :class:`TrackUsageState`       |
| ``useUsageMetrics``         | :class:`UsageMetricsState`     |
| ``useFeatureEntitlements``  | :class:`FeatureEntitlementsState` |
| ``useFeature``              | ``FeatureEntitlementsState.check`` / ``.checks`` |
"""

from billing_ui.core.track_rules import TrackRule
from billing_ui.settings import BillingSettings, configure, get_settings
from billing_ui.states.base import BillingState, billing_event
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.reset import reset_billing_states, switches_customer
from billing_ui.states.track import TrackUsageState, validate_browser_track

__all__ = [
    "BillingSettings",
    "BillingState",
    "FeatureEntitlementsState",
    "TrackRule",
    "TrackUsageState",
    "UsageMetricsState",
    "billing_event",
    "configure",
    "get_settings",
    "reset_billing_states",
    "switches_customer",
    "validate_browser_track",
]
