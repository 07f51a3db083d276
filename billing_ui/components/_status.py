"""How a component says what it does not know: stale data, a failed first load, nobody signed
in. Shared by the components so each status reads the same everywhere (see
:mod:`billing_ui.states.status` for the statuses)."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

from typing import Any, Final

import reflex as rx
from reflex_base.utils.imports import ImportDict
from reflex_base.vars.base import Var

from billing_ui.components import styles
from billing_ui.components._format import utc_date_time
from billing_ui.core.problems import USER_MESSAGE

OUTAGE_MARK: Final = "data-billing-outage"
ONCE_PER_PAGE_JS: Final = f"""useEffect(() => {{
  // The outage sentence once per page: every copy after the first in document order is hidden
  // (each component keeps its own status line). Re-run whenever the page's elements change.
  const once = () => document.querySelectorAll("[{OUTAGE_MARK}]").forEach((el, i) => {{
    if (el.hidden !== (i > 0)) el.hidden = i > 0;
  }});
  once();
  const observer = new MutationObserver(once);
  observer.observe(document.body, {{childList: true, subtree: true}});
  return () => observer.disconnect();
}}, []);"""


class OutageSentence(rx.el.Div):  # type: ignore[misc]
    """The neutral outage sentence, marked so a page shows it once however many components
    met the outage (a wrong key used to put it on the page three times). Its hook is the same
    string everywhere, so Reflex writes it once per component function."""

    def add_imports(self) -> ImportDict:
        return {"react": "useEffect"}

    def add_hooks(self) -> list[str | Var[Any]]:
        return [ONCE_PER_PAGE_JS]


def error_line(
    error: Any, *, status: str | None = None, text: Any = rx.text, **props: Any
) -> rx.Component:
    """A component's error: for an outage, its own ``status`` line (if any) and the outage
    sentence, once per page (see :class:`OutageSentence`); any other error as it is."""
    sentence = OutageSentence.create(text(USER_MESSAGE, **props), custom_attrs={OUTAGE_MARK: "1"})
    return rx.cond(
        error == USER_MESSAGE,
        rx.fragment(*([text(status, **props)] if status else []), sentence),
        text(error, **props),
    )


def retry_button(on_click: Any, busy: Any, *, color_scheme: str, testid: str) -> Any:
    return rx.button(
        rx.cond(busy, rx.spinner(size="1"), rx.icon("refresh_cw", size=14)),
        "Retry",
        on_click=on_click,
        size="1",
        variant="soft",
        color_scheme=color_scheme,
        data_testid=testid,
    )


def stale_callout(
    updated_at: Any, error: Any, *, retry: Any, busy: Any, testid: str
) -> rx.Component:
    """The data below is the last known: when it is from (``updated_at``, ISO 8601), that it
    is being retried, and why (``error``, a neutral sentence).

    The time is a date and time of day, not "2 min ago": a relative time is computed when the
    component renders, and an outage's retries send nothing once the failure is shown
    (``status.shows_fetching``), so "just now" stayed on screen for the whole outage while the
    dashboard's own line said "Last updated at Nov 30, 3:48:25 PM UTC"."""
    message = rx.vstack(
        rx.callout.text(
            f"Last updated at {utc_date_time(updated_at)} UTC, retrying.",
            weight="medium",
            data_testid="stale-note",
        ),
        rx.box(error_line(error, text=rx.callout.text, size="1"), data_testid=testid),
        spacing="0",
    )
    return _retry_callout("clock_alert", message, retry, busy, color="amber", role="status")


def error_callout(error: Any, *, retry: Any, busy: Any, testid: str, status: str) -> rx.Component:
    """Nothing is known: the first load failed. Say so (``status``: what this component cannot
    show), never "none"; then why (the outage sentence only once per page)."""
    message = rx.vstack(
        rx.callout.text(status, weight="medium"),
        error_line(error, text=rx.callout.text, size="1"),
        spacing="0",
        data_testid=testid,
    )
    return _retry_callout("triangle_alert", message, retry, busy, color="red", role="alert")


def _retry_callout(
    icon: str, message: rx.Component, retry: Any, busy: Any, *, color: str, role: str
) -> rx.Component:
    """A full-width callout: ``message`` on the left, the retry button on the right."""
    return rx.callout.root(
        rx.callout.icon(rx.icon(icon)),
        rx.hstack(
            message,
            rx.spacer(),
            retry_button(retry, busy, color_scheme=color, testid="usage-retry"),
            align="center",
            width="100%",
        ),
        color_scheme=color,
        role=role,
        width="100%",
    )


def calm_note(text: Any, *, icon: str, testid: str) -> rx.Component:
    """One quiet line (signed out, access unknown): no colour that suggests a fault."""
    return rx.hstack(
        rx.icon(icon, size=16, color="var(--gray-9)"),
        rx.text(text, **styles.MUTED_TEXT),
        align="center",
        spacing="2",
        data_testid=testid,
    )
