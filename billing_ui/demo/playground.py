"""Route ``/playground``: buttons that record usage, each beside the meter it moves."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.components import track_button, usage_meter
from billing_ui.demo.layout import page as shell
from billing_ui.demo.session import DemoSessionState
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState

ROUTE = "/playground"
TITLE = "Acme Cloud · Playground"
ON_LOAD = [DemoSessionState.require_customer, UsageMetricsState.poll, FeatureEntitlementsState.load]

# (feature, button label, quantity, icon, what it stands for)
ACTIONS: list[tuple[str, str, float, str, str]] = [
    ("api_calls", "Call the API", 1, "zap", "One request to the public API."),
    ("storage_gb", "Upload a file", 0.25, "upload", "A 250 MB upload: storage is metered in GB."),
    ("seats", "Add a seat", 1, "user_plus", "A team member. Seats have a hard limit."),
    ("ai_tokens", "Ask the assistant", 500, "sparkles", "One answer of about 500 tokens."),
    ("report_exports", "Export a report", 1, "file_down", "A PDF export of this month."),
]


def _action(feature: str, label: str, quantity: float, icon: str, blurb: str) -> rx.Component:
    return rx.vstack(
        usage_meter(feature_key=feature, box_shadow="none", border="none", padding="0"),
        rx.text(blurb, size="2", color="var(--gray-11)"),
        track_button(
            label,
            feature,
            quantity,
            {"source": "playground"},
            icon=icon,
            id=f"track-{feature}",
        ),
        spacing="3",
        padding="1.1em 1.25em",
        border="1px solid var(--gray-a5)",
        border_radius="var(--radius-4)",
        background="var(--color-panel-solid)",
        width="100%",
        data_testid="playground-action",
        data_feature_key=feature,
    )


def page() -> rx.Component:
    return shell(
        "Usage playground",
        "Each click records usage on the billing server; the meter follows at once.",
        rx.grid(
            *[_action(*a) for a in ACTIONS],
            columns=rx.breakpoints(initial="1", sm="2", lg="3"),
            gap="1em",
            width="100%",
        ),
        # The clicks here push meters past 80 %: the nudge pops up as a toast, not a banner
        # that would shift the buttons under the pointer.
        nudge="toast",
    )
