"""``usage_chart``: a feature's cumulative consumption over the current period, against its
limit — the "when will we run out" view the meters cannot give.

Recharts (bundled with Reflex) draws it; the data is :class:`UsageHistoryState`'s, loaded when
the chart mounts and kept fresh by the page's ``on_load=UsageHistoryState.poll``.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any, Literal

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import humanize, number
from billing_ui.states.history import UsageHistoryState, history_id
from billing_ui.states.metrics import UsageMetricsState

GROUPED = "(value) => Number(value).toLocaleString('en-US', {maximumFractionDigits: 3})"
"""The y axis's tick format: the same grouping as :func:`~billing_ui.components._format.number`."""


def usage_chart(
    feature_key: str,
    *,
    bucket: Literal["day", "hour"] = "day",
    title: str | None = None,
    height: int = styles.CHART_HEIGHT,
    show_limit: bool = True,
    **props: Any,
) -> rx.Component:
    """An area chart of ``feature_key``'s running total over the period, per day (or per hour
    for a feature that resets daily), with the plan's limit as a dashed line::

        app.add_page(dashboard, on_load=[UsageMetricsState.poll, UsageHistoryState.poll])
        usage_chart("api_calls", title="API calls this month")
        usage_chart("ai_tokens", bucket="hour")
    """
    ident = history_id(feature_key, bucket)
    # An hourly chart shows today: its total must not claim the whole period.
    span = "today" if bucket == "hour" else "this period"
    history = UsageHistoryState.histories[ident]
    metric = UsageMetricsState.metrics_by_key[feature_key]
    has_metric = UsageMetricsState.metrics_by_key.contains(feature_key)
    # Always rendered (recharts looks for its children by type; a conditional wrapper would
    # hide the line): without a finite limit ``y`` is undefined and nothing is drawn.
    has_limit = has_metric & ~metric.unlimited & (metric.limit > 0)
    limit_line = (
        [
            rx.recharts.reference_line(
                # Above the line, at its right end: never on the dashes themselves.
                rx.recharts.label(value="Limit", position="insideTopRight", fill="var(--red-11)"),
                y=rx.cond(has_limit, metric.limit, Var.create(None)).to(int),
                if_overflow="extendDomain",
                **styles.CHART_LIMIT,
            )
        ]
        if show_limit
        else []
    )
    chart = rx.recharts.area_chart(
        rx.recharts.cartesian_grid(stroke_dasharray="3 3", stroke="var(--gray-a5)"),
        rx.recharts.x_axis(data_key="label", **styles.CHART_AXIS),
        # The meters' grouped format (15,000), and as wide as the longest tick needs: a 6-digit
        # value never loses its first digits at the card's edge.
        rx.recharts.y_axis(**styles.CHART_AXIS, width="auto", tick_formatter=GROUPED),
        rx.recharts.graphing_tooltip(
            content_style={
                "background": "var(--color-panel-solid)",
                "border": "1px solid var(--gray-a6)",
                "border_radius": "var(--radius-3)",
                "color": "var(--gray-12)",
            },
        ),
        rx.recharts.area(
            data_key="cumulative",
            name="Used",
            type_="monotone",
            stroke_width=2,
            is_animation_active=False,
            **styles.CHART_AREA,
        ),
        *limit_line,
        data=history.points.to(list[dict[str, Any]]),
        height=height,
        width="100%",
        margin={"top": 10, "right": 16, "bottom": 0, "left": 0},
    )
    heading = (
        title
        if title is not None
        else rx.cond(has_metric, metric.feature_title, humanize(feature_key))
    )
    has_data = UsageHistoryState.histories.contains(ident)
    failed = UsageHistoryState.errors.contains(ident)
    card = rx.vstack(
        rx.hstack(
            rx.text(heading, weight="medium", size="3"),
            rx.spacer(),
            rx.cond(
                UsageHistoryState.histories.contains(ident),
                rx.text(f"{number(history.total)} {span}", **styles.MUTED_TEXT),
            ),
            width="100%",
            align="baseline",
        ),
        rx.cond(
            has_data & failed,
            rx.text(
                "Not up to date: retrying.",
                data_testid="chart-stale",
                **styles.merge(styles.MUTED_TEXT, {"size": "1"}),
            ),
        ),
        rx.cond(
            has_data,
            rx.box(chart, width="100%", height=f"{height}px"),
            rx.cond(
                failed,
                rx.center(
                    rx.text(UsageHistoryState.errors[ident], **styles.MUTED_TEXT),
                    height=f"{height}px",
                    width="100%",
                    data_testid="chart-error",
                ),
                rx.skeleton(rx.box(height=f"{height}px", width="100%"), loading=True),
            ),
        ),
        on_mount=UsageHistoryState.load(ident),
        spacing="3",
        data_testid="usage-chart",
        data_feature_key=feature_key,
        **styles.merge(styles.CARD, props),
    )
    # Signed out: nothing to chart, and the page says so once (usage_dashboard).
    return rx.cond(UsageHistoryState.signed_out, rx.fragment(), card)
