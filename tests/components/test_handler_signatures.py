"""Handlers that cannot be misused (issue 7, part 4): the plain event-spec form either works
or fails when the page is built, never passes the click's event data on silently; a track
button for a feature the app does not allow fails when the page is built."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import reflex as rx
from reflex_base.utils.exceptions import EventHandlerArgTypeMismatchError

import billing_ui.states as bs
from billing_ui.components import track_button
from billing_ui.core.errors import InvalidInputError
from billing_ui.states import TrackUsageState


def bound_args(component: rx.Component) -> list[str]:
    (spec,) = component.event_triggers["on_click"].events
    return [str(name) for name, _value in spec.args]


def test_the_plain_form_binds_every_argument_and_reflex_appends_nothing() -> None:
    button = rx.button("x", on_click=TrackUsageState.track("api_calls", 1))
    assert bound_args(button) == ["feature_key", "quantity"]
    with_meta = TrackUsageState.track_with_metadata("api_calls", {"source": "x"}, 2)
    assert bound_args(rx.button("x", on_click=with_meta)) == ["feature_key", "metadata", "quantity"]


@pytest.mark.parametrize(
    "spec",
    [
        lambda: TrackUsageState.track("api_calls"),
        lambda: TrackUsageState.track_with_metadata("api_calls", {"source": "x"}),
    ],
    ids=["track without quantity", "track_with_metadata without quantity"],
)
def test_a_missing_argument_fails_when_the_page_is_built(spec: object) -> None:
    """The click's PointerEventInfo would land on ``quantity``: Reflex refuses the mismatch."""
    with pytest.raises(EventHandlerArgTypeMismatchError, match="quantity"):
        rx.button("x", on_click=spec())  # type: ignore[operator]


@pytest.fixture
def only_api_calls() -> Iterator[None]:
    before = bs.get_settings().trackable
    bs.configure(trackable={"api_calls": bs.TrackRule()})
    yield
    bs.configure(trackable=before)


def test_a_track_button_for_a_feature_not_allowed_fails_when_the_page_is_built(
    only_api_calls: None,
) -> None:
    track_button("Call", "api_calls")
    with pytest.raises(InvalidInputError, match="'seats' is not in configure\\(trackable"):
        track_button("Add a seat", "seats")
