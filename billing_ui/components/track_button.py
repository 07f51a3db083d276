"""``track_button``: a button that records usage (``useTrackUsage().mutate``) and says how it
went, right beside it.

The button stays clickable while a track is in flight — ten quick clicks are ten events, each
with its own idempotency key — and shows a spinner meanwhile. It is disabled only when the
feature's hard limit is reached (the server would refuse more). Feedback (success or the
error) belongs to the button whose feature was tracked last, so several buttons on one page
do not echo each other.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import logging
from typing import Any

import reflex as rx

from billing_ui.components import styles
from billing_ui.components._status import error_line
from billing_ui.core.errors import InvalidInputError
from billing_ui.settings import get_settings
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.track import TrackUsageState

log = logging.getLogger("billing_ui.components")


def _check_trackable(feature_key: str) -> None:
    """Fail when the page is built, not when the button is clicked."""
    trackable = get_settings().trackable
    if feature_key in trackable:
        return
    if not trackable:
        log.warning(
            "track_button(%r): billing_ui.configure(trackable=...) allows no feature yet; clicks "
            "will be refused unless it is configured before the app starts",
            feature_key,
        )
        return
    raise InvalidInputError.single(
        "feature_key",
        "allowlist",
        f"track_button({feature_key!r}): {feature_key!r} is not in configure(trackable=...) "
        f"({', '.join(sorted(trackable))}); every click would be refused",
    )


def track_button(
    label: str,
    feature_key: str,
    quantity: float = 1,
    metadata: dict[str, Any] | None = None,
    *,
    icon: str | None = None,
    show_feedback: bool = True,
    **props: Any,
) -> rx.Component:
    """A button that tracks ``quantity`` of ``feature_key`` for the signed-in customer.

    The feature must be in the app's ``trackable`` allowlist (``billing_ui.configure``): a
    button for any other feature raises when the page is built (configure before building
    pages), as clicking it would only ever be refused. The server re-validates everything the
    browser sends. Extra props go to the ``rx.button``::

        track_button("Call the API", "api_calls")
        track_button("Upload a file", "storage_gb", 0.25, {"source": "demo"}, icon="upload")
    """
    _check_trackable(feature_key)
    metric = UsageMetricsState.metrics_by_key[feature_key]
    blocked = UsageMetricsState.metrics_by_key.contains(feature_key) & metric.blocked
    pending = TrackUsageState.pending_features.contains(feature_key)
    mine = TrackUsageState.last_feature_key == feature_key
    button = rx.button(
        rx.cond(pending, rx.spinner(size="1"), rx.icon(icon or "plus", size=16)),
        label,
        # Every parameter bound: Reflex appends no click data (see TrackUsageState.track).
        on_click=(
            TrackUsageState.track(feature_key, quantity)
            if metadata is None
            else TrackUsageState.track_with_metadata(feature_key, metadata, quantity)
        ),
        disabled=blocked,
        data_testid="track-button",
        data_feature_key=feature_key,
        aria_busy=pending,
        **props,
    )
    if not show_feedback:
        return button
    feedback = rx.cond(
        blocked,
        rx.text("Limit reached", color="var(--red-11)", size="2", data_testid="track-blocked"),
        rx.cond(
            TrackUsageState.unconfirmed.contains(feature_key),
            # No answer yet: neither "Recorded" nor an error until the billing API answers.
            rx.text(
                "Not confirmed yet, checking…",
                color="var(--amber-11)",
                size="2",
                data_testid="track-unconfirmed",
            ),
            rx.cond(
                mine & ~pending & (TrackUsageState.queued_feature == feature_key),
                # Kept in the durable outbox: it will be sent, it is not recorded yet.
                rx.text(
                    f"Queued, will be sent ({TrackUsageState.queued} waiting)",
                    color="var(--amber-11)",
                    size="2",
                    data_testid="track-queued",
                ),
                rx.cond(
                    mine & ~pending,
                    rx.cond(
                        TrackUsageState.is_error,
                        rx.box(
                            error_line(
                                TrackUsageState.error,
                                status="Not recorded.",
                                color="var(--red-11)",
                                size="2",
                            ),
                            role="alert",
                            data_testid="track-error",
                        ),
                        rx.text(
                            rx.icon("check", size=14, display="inline", vertical_align="middle"),
                            " Recorded",
                            color="var(--grass-11)",
                            size="2",
                            data_testid="track-success",
                        ),
                    ),
                ),
            ),
        ),
    )
    return rx.hstack(
        button,
        rx.box(feedback, aria_live="polite", **styles.MUTED_TEXT_BOX),
        align="center",
        spacing="3",
        data_testid="track-control",
        data_feature_key=feature_key,
    )
