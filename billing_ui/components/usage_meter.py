"""``usage_meter``: one feature's usage in its current period (the SDK's ``UsageDisplay``).

Bound to a :class:`~billing_ui.states.views.MetricView` var, so the browser re-renders it from
the state's deltas alone: after a track the server's new count reaches the bar without a page
fetch. Accessible: the bar is a ``role="progressbar"`` with ``aria-valuenow/min/max`` in the
feature's own units, and the level is also said in words, never by colour alone.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any

import reflex as rx
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import number, resets_in
from billing_ui.states._reflex_internals import foreach_render_fn
from billing_ui.states.metrics import UsageMetricsState
from billing_ui.states.views import MetricView


@foreach_render_fn
def usage_meter(
    metric: Var[MetricView] | None = None,
    *,
    feature_key: str | None = None,
    show_product: bool = False,
    locale: str | None = None,
    **props: Any,
) -> rx.Component:
    """A card with the feature's title, a progress bar, "consumed / limit used", what remains
    and when the period resets; amber from 80 % used, red from 100 %, "Unlimited" without a
    limit.

    Pass a metric var (e.g. inside ``rx.foreach``) or a ``feature_key`` to read it from
    :class:`UsageMetricsState` (nothing is rendered until that feature's metric is loaded).
    Numbers are grouped in the browser's locale (``15,000``), or ``locale`` (``"de-DE"``:
    ``15.000``). Extra props style the card::

        rx.foreach(UsageMetricsState.metrics, usage_meter)
        usage_meter(feature_key="api_calls", width="24em")
    """
    if metric is None:
        if feature_key is None:
            raise TypeError("usage_meter() needs a metric var or a feature_key")
        by_key = UsageMetricsState.metrics_by_key
        return rx.cond(
            by_key.contains(feature_key),
            usage_meter(by_key[feature_key], show_product=show_product, locale=locale, **props),
        )
    if feature_key is not None:
        raise TypeError("usage_meter() takes a metric var or a feature_key, not both")
    return rx.vstack(
        _header(metric, show_product),
        meter_bar(metric, locale=locale),
        _figures(metric, locale),
        spacing="2",
        data_testid="usage-meter",
        data_feature_key=metric.feature_key,
        data_level=metric.level,
        **styles.merge(styles.CARD, props),
    )


def meter_bar(metric: Var[MetricView], *, locale: str | None = None) -> rx.Component:
    """The bar alone: ``role="progressbar"``, values in the feature's units (an unlimited
    feature has no ``aria-valuemax`` and a striped full bar). For a compact display::

        rx.hstack(rx.text("API"), meter_bar(UsageMetricsState.metrics_by_key["api_calls"]))
    """
    label = rx.cond(
        metric.unlimited,
        f"{number(metric.consumed, locale)} used, unlimited",
        f"{number(metric.consumed, locale)} of {number(metric.limit, locale)} used",
    )
    return rx.box(
        rx.cond(
            metric.unlimited,
            rx.box(style=styles.UNLIMITED_FILL),
            rx.box(
                style=styles.METER_FILL,
                width=f"{metric.bar_percent}%",
                background=styles.level_color(metric.level),
            ),
        ),
        custom_attrs={
            "role": "progressbar",
            "aria-label": metric.feature_title,
            "aria-valuemin": 0,
            "aria-valuenow": metric.consumed,
            "aria-valuemax": rx.cond(metric.unlimited, Var.create(None), metric.limit),
            "aria-valuetext": label,
        },
        style=styles.METER_TRACK,
    )


def _header(metric: Var[MetricView], show_product: bool) -> rx.Component:
    return rx.hstack(
        rx.vstack(
            rx.text(metric.feature_title, weight="medium", size="3"),
            *([rx.text(metric.product_name, **styles.MUTED_TEXT)] if show_product else []),
            spacing="0",
        ),
        rx.spacer(),
        rx.cond(
            metric.level != "normal",
            styles.level_badge(metric.level, variant="soft", data_testid="meter-level"),
        ),
        width="100%",
        align="start",
    )


def _figures(metric: Var[MetricView], locale: str | None) -> rx.Component:
    used = rx.cond(
        metric.unlimited,
        rx.text(
            rx.text.strong(number(metric.consumed, locale), data_testid="meter-consumed"),
            " used · Unlimited",
            size="2",
        ),
        rx.text(
            rx.text.strong(number(metric.consumed, locale), data_testid="meter-consumed"),
            " / ",
            rx.text.span(number(metric.limit, locale), data_testid="meter-limit"),
            " used",
            size="2",
        ),
    )
    small = styles.merge(styles.MUTED_TEXT, {"size": "1", "white_space": "nowrap"})
    resets = rx.text(resets_in(metric.resets_in_days), **small)
    # "Used" has the first line to itself; what remains shares the second with the reset, in
    # small type: a 7-digit "1,750,000 remaining" beside "250,000 / 2,000,000 used" did not fit
    # a third of a 1280 px page and dropped onto a line of its own.
    second = rx.cond(
        metric.unlimited,
        resets,
        rx.hstack(
            rx.text(
                rx.text.span(number(metric.remaining, locale), data_testid="meter-remaining"),
                " remaining",
                **small,
            ),
            rx.spacer(),
            resets,
            width="100%",
            align="baseline",
            wrap="wrap",
            spacing="2",
        ),
    )
    # Queued in the outbox, not yet with the billing API: already in the figures, and said.
    pending = rx.cond(
        metric.pending > 0,
        rx.badge(
            "+",
            number(metric.pending, locale),
            " pending",
            color_scheme="gray",
            variant="surface",
            title="Recorded here and queued: it reaches the billing service when it is back",
            data_testid="meter-pending",
        ),
    )
    first = rx.hstack(used, pending, width="100%", align="baseline", wrap="wrap", spacing="2")
    return rx.vstack(first, second, spacing="1", width="100%")
