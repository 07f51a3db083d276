"""``usage_dashboard``: a responsive grid of meters with loading, error and empty states.

Filtering happens in the browser over the one ``UsageMetricsState.metrics`` list (BillingOS's
server-side filter is unreliable, and one fetch then serves every dashboard of a page), so
several filtered dashboards on one page cost nothing extra.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._status import calm_note, stale_callout
from billing_ui.components._status import error_callout as _error_callout
from billing_ui.components.usage_meter import usage_meter
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.status import ERROR, PENDING, SIGNED_OUT, STALE
from billing_ui.states.views import MetricView


def usage_dashboard(
    feature_key: str | Sequence[str] | None = None,
    *,
    exclude: Sequence[str] = (),
    columns: Any = styles.GRID_COLUMNS,
    empty_text: str | None = "No usage to show yet.",
    show_error: bool = True,
    skeletons: int = 3,
    locale: str | None = None,
    **props: Any,
) -> rx.Component:
    """All of the customer's meters, or only ``feature_key`` (one key or several), minus
    ``exclude``.

    Each query status renders in its own way (:mod:`billing_ui.states.status`): skeleton
    cards while the first load runs; an error callout with a Retry button when it failed and
    nothing is known (never "no usage"); the last good meters under a "last updated 2 min ago,
    retrying" note when a refresh failed; one calm "sign in" line when nobody is. The notes
    belong to one dashboard of a page (``show_error=False`` leaves them to another); with no
    metric to show, ``empty_text`` (``None``: nothing at all). Numbers follow the browser's
    locale, or ``locale`` (``"de-DE"``). The page keeps the metrics fresh with
    ``on_load=UsageMetricsState.poll``::

        app.add_page(dashboard, on_load=UsageMetricsState.poll)

        def dashboard() -> rx.Component:
            return rx.vstack(
                usage_dashboard(["api_calls", "ai_tokens"]),             # just these two
                usage_dashboard(["seats"], show_error=False),            # and this one
                usage_dashboard(exclude=["api_calls", "ai_tokens", "seats"],
                                empty_text=None, show_error=False),      # the rest
            )
    """
    metrics = _select(feature_key, exclude)
    state = UsageMetricsState
    grid = rx.cond(
        metrics.length() > 0,
        rx.grid(
            rx.foreach(metrics, lambda m: usage_meter(m, locale=locale)),
            columns=columns,
            **styles.GRID,
        ),
        _empty(empty_text) if empty_text is not None else rx.fragment(),
    )

    def own(component: rx.Component) -> rx.Component:
        """The page-level notes go to the dashboard that shows errors (one per page)."""
        return component if show_error else rx.fragment()

    return rx.vstack(
        rx.match(
            state.status,
            (PENDING, _skeleton_grid(skeletons, columns)),
            (SIGNED_OUT, own(calm_note(SIGNED_OUT_TEXT, icon="log_in", testid="usage-signed-out"))),
            (ERROR, own(error_callout())),
            (
                STALE,
                rx.fragment(
                    own(
                        stale_callout(
                            state.updated_at,
                            state.error,
                            retry=state.retry_all,
                            busy=state.is_fetching,
                            testid="usage-error",
                        )
                    ),
                    grid,
                ),
            ),
            grid,
        ),
        spacing="3",
        width="100%",
        data_testid="usage-dashboard",
        data_status=state.status,
        aria_busy=state.is_fetching,
        **props,
    )


SIGNED_OUT_TEXT = "Sign in to see your usage."


def error_callout() -> rx.Component:
    """The first load failed and nothing is known: say why, offer a retry (never "no usage")."""
    return _error_callout(
        UsageMetricsState.error,
        retry=UsageMetricsState.retry_all,
        busy=UsageMetricsState.is_fetching,
        testid="usage-error",
        status="Your usage can't be shown right now.",
    )


def _select(
    feature_key: str | Sequence[str] | None, exclude: Sequence[str]
) -> Var[list[MetricView]]:
    """The metrics to show, filtered in the browser (one list serves every dashboard)."""
    metrics: Any = UsageMetricsState.metrics
    if feature_key is not None:
        keys = Var.create([feature_key] if isinstance(feature_key, str) else list(feature_key))
        metrics = metrics.filter(lambda m: keys.contains(m.feature_key))
    if exclude:
        skip = Var.create(list(exclude))
        metrics = metrics.filter(lambda m: ~skip.contains(m.feature_key))
    return metrics


def _skeleton_grid(count: int, columns: Any) -> rx.Component:
    return rx.grid(
        *[
            rx.skeleton(rx.box(height=styles.SKELETON_HEIGHT, width="100%"), loading=True)
            for _ in range(count)
        ],
        columns=columns,
        data_testid="usage-loading",
        **styles.GRID,
    )


def _empty(text: str) -> rx.Component:
    return rx.center(
        rx.vstack(
            rx.icon("gauge", size=28, color="var(--gray-9)"),
            rx.text(text, **styles.MUTED_TEXT),
            align="center",
            spacing="2",
        ),
        data_testid="usage-empty",
        **styles.merge(styles.CARD, {"padding": "2em"}),
    )
