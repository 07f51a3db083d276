"""``usage_chart``: a feature's cumulative consumption over the current period, against its
limit — the "when will we run out" view the meters cannot give.

Recharts (bundled with Reflex) draws it; the data is :class:`UsageHistoryState`'s, loaded when
the chart mounts and kept fresh by the page's ``on_load=UsageHistoryState.poll``.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any, Final, Literal

import reflex as rx
from reflex.vars import FunctionStringVar
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import (
    check_locale,
    date_formatter,
    humanize,
    number,
    number_formatter,
)
from billing_ui.components._status import error_line
from billing_ui.states.history import UsageHistoryState, history_id
from billing_ui.states.metrics import UsageMetricsState

STEP_MS: Final = {"day": 86_400_000, "hour": 3_600_000}
POINTS_JS: Final = """(h, ms, key, step) => {
  const values = h?.points ?? [];
  const consumed = ms?.[key]?.consumed;
  return values.map((v, i) => ({
    t: h.start + i * step,
    v: i === values.length - 1 && consumed != null ? consumed : v,
  }));
}"""
"""The chart's points from the compact history: the last one is the meter's ``consumed``, so
a track moves the meter, the last point and the total in the same render."""
LAST_JS: Final = "(points) => (points.length ? points[points.length - 1].v : 0)"
SPAN_JS: Final = """(m) => (m?.period_end && Date.parse(m.period_end) - Date.parse(m.period_start)
  <= 86400000 ? "today" : "this period")"""
"""What the total covers: the meter's period ("today" only for a feature that resets daily,
whatever the chart's buckets; an hourly chart of a monthly quota still totals the month)."""


def chart_points(feature_key: str, bucket: str) -> Var[list[dict[str, Any]]]:
    """The points a chart draws (``t``: bucket start in epoch ms, ``v``: running total)."""
    return (
        FunctionStringVar.create(POINTS_JS)
        .call(
            UsageHistoryState.histories[history_id(feature_key, bucket)],
            UsageMetricsState.metrics_by_key,
            Var.create(feature_key),
            Var.create(STEP_MS[bucket]),
        )
        .to(list[dict[str, Any]])
    )


def usage_chart(
    feature_key: str,
    *,
    bucket: Literal["day", "hour"] = "day",
    title: str | None = None,
    height: int = styles.CHART_HEIGHT,
    show_limit: bool = True,
    locale: str | None = None,
    **props: Any,
) -> rx.Component:
    """An area chart of ``feature_key``'s running total over the period, per day (or per hour
    for a feature that resets daily), with the plan's limit as a dashed line. Works against
    any BillingOS: its points are the usage samples the app keeps from the meters (the local
    server's history endpoint only back-fills). Its last point and total are the meter's own
    value. Ticks and tooltips use the browser's locale, or ``locale`` (``"de-DE"``)::

        app.add_page(dashboard, on_load=[UsageMetricsState.poll, UsageHistoryState.poll])
        usage_chart("api_calls", title="API calls this month")
        usage_chart("ai_tokens", bucket="hour")
    """
    check_locale(locale)
    ident = history_id(feature_key, bucket)
    history = UsageHistoryState.histories[ident]
    points = chart_points(feature_key, bucket)
    last = FunctionStringVar.create(LAST_JS).call(points).to(float)
    metric = UsageMetricsState.metrics_by_key[feature_key]
    has_metric = UsageMetricsState.metrics_by_key.contains(feature_key)
    span = FunctionStringVar.create(SPAN_JS).call(metric).to(str)
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
        rx.recharts.x_axis(
            data_key="t",
            tick_formatter=date_formatter(bucket, locale),
            min_tick_gap=24,  # labels a word apart ("Nov 25 Nov 30" touched at 5 px)
            **styles.CHART_AXIS,
        ),
        # The meters' grouped format (15,000), and as wide as the longest tick needs: a 6-digit
        # value never loses its first digits at the card's edge.
        rx.recharts.y_axis(
            **styles.CHART_AXIS, width="auto", tick_formatter=number_formatter(locale)
        ),
        rx.recharts.graphing_tooltip(
            content_style={
                "background": "var(--color-panel-solid)",
                "border": "1px solid var(--gray-a6)",
                "border_radius": "var(--radius-3)",
                "color": "var(--gray-12)",
            },
            # Recharts' Tooltip props the Reflex wrapper does not declare.
            custom_attrs={
                "labelFormatter": FunctionStringVar.create(date_formatter(bucket, locale)),
                "formatter": FunctionStringVar.create(number_formatter(locale)),
            },
        ),
        rx.recharts.area(
            data_key="v",
            name="Used",
            type_="monotone",
            stroke_width=2,
            # Dots while there are too few points for a line (samples just began).
            dot=rx.cond(history.points.length() < 3, True, False),
            is_animation_active=False,
            **styles.CHART_AREA,
        ),
        *limit_line,
        data=points,
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
                rx.text(
                    f"{number(last, locale)} {span}",
                    data_testid="chart-total",
                    **styles.MUTED_TEXT,
                ),
            ),
            width="100%",
            align="baseline",
        ),
        rx.cond(
            has_data & history.partial & ~failed,
            rx.text(
                "Recorded since the app started watching; earlier usage is in the meter's total.",
                data_testid="chart-partial",
                **styles.merge(styles.MUTED_TEXT, {"size": "1"}),
            ),
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
                    rx.vstack(
                        rx.text("This chart can't be drawn right now.", **styles.MUTED_TEXT),
                        error_line(UsageHistoryState.errors[ident], **styles.MUTED_TEXT),
                        align="center",
                        spacing="1",
                    ),
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
        data_last_point=last,
        **styles.merge(styles.CARD, props),
    )
    # Signed out: nothing to chart, and the page says so once (usage_dashboard).
    return rx.cond(UsageHistoryState.signed_out, rx.fragment(), card)
