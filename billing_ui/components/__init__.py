"""The billing dashboard components: functions returning ``rx.Component``, bound to the states
in :mod:`billing_ui.states`. Each module holds one component; looks live in ``styles``."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from billing_ui.components.entitlements_list import entitlements_list
from billing_ui.components.feature_gate import feature_gate, upgrade_prompt
from billing_ui.components.track_button import track_button
from billing_ui.components.upgrade_nudge import upgrade_nudge
from billing_ui.components.usage_chart import usage_chart
from billing_ui.components.usage_dashboard import usage_dashboard
from billing_ui.components.usage_meter import meter_bar, usage_meter

__all__ = [
    "entitlements_list",
    "feature_gate",
    "meter_bar",
    "track_button",
    "upgrade_nudge",
    "upgrade_prompt",
    "usage_chart",
    "usage_dashboard",
    "usage_meter",
]
