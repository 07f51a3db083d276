"""Proves the toolchain end to end: Reflex builds a frontend with the npm-installed bun, and
headless Debian chromium drives it through the websocket to the backend and back."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from .browser import click, run_app, wait_for


def counter_app() -> None:
    # AppHarness writes this function's body out as the app module of a fresh app.
    import reflex as rx

    class CounterState(rx.State):
        count: int = 0

        @rx.event
        def increment(self) -> None:
            self.count += 1

    def index() -> rx.Component:
        return rx.vstack(
            # Filled in by the backend on hydrate: proves the websocket round trip works.
            rx.text(CounterState.router.session.client_token, id="token"),
            rx.text(CounterState.count, id="count"),
            rx.button("Add one", on_click=CounterState.increment, id="add"),
        )

    app = rx.App()
    app.add_page(index)


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppHarness]:
    with run_app(tmp_path_factory.mktemp("counter"), app_source=counter_app) as harness:
        yield harness


def test_click_increments_counter(counter: AppHarness, browser: WebDriver) -> None:
    assert counter.frontend_url is not None
    browser.get(counter.frontend_url)

    def count_text() -> str:
        return browser.find_element(By.ID, "count").text

    # "0" is in the compiled page already; the token only arrives once the backend hydrated it.
    wait_for(
        lambda: browser.find_element(By.ID, "token").text,
        timeout=30,
        message=lambda: browser.page_source[:2000],
    )
    assert count_text() == "0"
    click(browser, By.ID, "add")
    wait_for(lambda: count_text() == "1", timeout=15, message=lambda: f"count is {count_text()!r}")
