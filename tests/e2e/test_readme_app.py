"""The README's "In a Reflex app" example, run as written, as a new user would: its code block
becomes the app module of a fresh Reflex app in a temporary directory outside this repo, which
imports billing_ui as an installed library, and headless chromium drives it against the real
local billing server (seeded with the demo customers the example's users map to).

The billing API is configured the way the README says, through BILLINGOS_API_URL and
BILLINGOS_SECRET_KEY. To check what a wrong key does, the test swaps the app's client for one
with a wrong key (``configure(client_factory=...)`` from the test process, where AppHarness
runs the backend): the real server then refuses it, as it would a mistyped key.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from reflex.testing import AppHarness
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

import billing_ui
from billing_ui.core import AsyncBillingClient, BillingClient
from billing_ui.core.problems import USER_MESSAGE
from billing_ui.runtime import install
from billing_ui.server.testing import RunningServer, running_server
from tests.log_records import Records

from .browser import click, fresh, patched_env, run_app, wait_for
from .demo import PAGE_TIMEOUT, REPO

APP_NAME = "readme_app"
OPERATOR_ADVICE = ("BILLINGOS", "secret", "sk_test", "api_key", "client_factory")


def readme_example() -> str:
    """The first Python block of the README's "In a Reflex app" section, verbatim."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## In a Reflex app\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md's 'In a Reflex app' section has no python block"
    return match.group(1)


def example_users() -> dict[str, str]:
    """The example's ``USERS`` (e-mail -> customer id), read from the example itself."""
    namespace: dict[str, object] = {}
    line = next(ln for ln in readme_example().splitlines() if ln.startswith("USERS = "))
    exec(line, namespace)
    users = namespace["USERS"]
    assert isinstance(users, dict) and len(users) >= 2
    return users


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    with running_server(db_path=tmp_path_factory.mktemp("billing") / "billing.db", seed=True) as s:
        yield s


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, billing: RunningServer) -> Iterator[AppHarness]:
    root = tmp_path_factory.mktemp(APP_NAME)
    assert REPO not in root.parents, "the app must live outside the repo"
    before = billing_ui.get_settings()
    env = {"BILLINGOS_API_URL": billing.base_url, "BILLINGOS_SECRET_KEY": billing.api_key}
    try:
        with patched_env(env):
            # What a fresh app process starts from: the default runtime and settings, not
            # whatever client_factory an earlier test app in this process configured (the
            # example sets no client_factory, so it would inherit one).
            install()
            with run_app(root, app_source=readme_example(), app_name=APP_NAME) as h:
                yield h
    finally:  # the example configured billing_ui process-wide: restore it for later tests
        billing_ui.configure(
            **{f.name: getattr(before, f.name) for f in dataclasses.fields(before)}
        )


def consumed(billing: RunningServer, customer: str, feature: str) -> float:
    with BillingClient(base_url=billing.base_url, api_key=billing.api_key) as api:
        metric = next(
            m for m in api.get_usage_metrics(customer_id=customer) if m.feature_key == feature
        )
        return metric.consumed


def body(browser: WebDriver) -> str:
    return browser.find_element(By.TAG_NAME, "body").text


def meter(browser: WebDriver, feature: str) -> str:
    found = browser.find_elements(
        By.CSS_SELECTOR,
        f'[data-testid="usage-meter"][data-feature-key="{feature}"] [data-testid="meter-consumed"]',
    )
    return found[0].text if found else ""


def sign_in(browser: WebDriver, app: AppHarness, email: str) -> None:
    assert app.frontend_url is not None
    browser.get(app.frontend_url)
    field = wait_for(
        lambda: browser.find_element(By.NAME, "email"),
        timeout=PAGE_TIMEOUT,
        message=lambda: browser.page_source[:1500],
    )

    # The submit is only handled once the websocket is up: retry until the redirect happens.
    def signed_in() -> bool:
        if "/dashboard" not in browser.current_url:
            field.clear()
            field.send_keys(email)
            browser.find_element(By.CSS_SELECTOR, 'button[type="submit"]').click()
        return "/dashboard" in browser.current_url

    wait_for(signed_in, timeout=PAGE_TIMEOUT, interval=0.5)


def test_the_readme_example_runs_as_written_in_a_fresh_app(
    app: AppHarness, browser: WebDriver, billing: RunningServer
) -> None:
    module = app.app_module
    assert module is not None and Path(module.__file__ or "").is_relative_to(app.app_path)
    assert not (app.app_path / "billing_ui").exists(), "billing_ui must come installed"
    assert not Path(billing_ui.__file__ or "").is_relative_to(app.app_path)

    (ada, ada_id), (bob, bob_id) = list(example_users().items())[:2]
    sign_in(browser, app, ada)
    before = consumed(billing, ada_id, "api_calls")
    wait_for(
        lambda: meter(browser, "api_calls") == f"{before:,.0f}",
        timeout=PAGE_TIMEOUT,
        message=lambda: f"meter shows {meter(browser, 'api_calls')!r}, server {before}",
    )

    # The example's track button moves the meter and the server by one.
    click(browser, By.CSS_SELECTOR, '[data-testid="track-button"][data-feature-key="api_calls"]')
    wait_for(lambda: meter(browser, "api_calls") == f"{before + 1:,.0f}", timeout=10)
    assert consumed(billing, ada_id, "api_calls") == before + 1

    # The gate: the customers the example maps to have no SSO; its content stays hidden.
    gate = '[data-testid="feature-gate"][data-feature-key="sso"]'
    wait_for(lambda: browser.find_element(By.CSS_SELECTOR, gate).text, timeout=10)
    assert "SSO settings" not in fresh(lambda: browser.find_element(By.CSS_SELECTOR, gate).text)

    # Sign out and in as the other user: the meter is theirs, never the previous one's.
    click(browser, By.XPATH, '//button[normalize-space()="Sign out"]')
    wait_for(lambda: browser.find_elements(By.NAME, "email"), timeout=PAGE_TIMEOUT)
    sign_in(browser, app, bob)
    bob_used = consumed(billing, bob_id, "api_calls")
    assert bob_used != before + 1, "pick example users with different usage"
    wait_for(lambda: meter(browser, "api_calls") == f"{bob_used:,.0f}", timeout=PAGE_TIMEOUT)

    # An unknown e-mail is refused by the example's handler.
    click(browser, By.XPATH, '//button[normalize-space()="Sign out"]')
    field = wait_for(lambda: browser.find_element(By.NAME, "email"), timeout=PAGE_TIMEOUT)
    field.send_keys("nobody@example.com")
    click(browser, By.CSS_SELECTOR, 'button[type="submit"]')
    wait_for(lambda: "Unknown e-mail address." in body(browser), timeout=10)
    assert "/dashboard" not in browser.current_url


def test_a_wrong_secret_key_is_logged_once_and_users_see_a_neutral_line(
    app: AppHarness, browser: WebDriver, billing: RunningServer
) -> None:
    from billing_ui.states._runtime import queries

    lines = Records()  # the operator log, in this process
    operator = logging.getLogger("billing_ui.operator")
    operator.addHandler(lines)
    right = billing_ui.get_settings().client_factory
    billing_ui.configure(
        client_factory=lambda: AsyncBillingClient(
            base_url=billing.base_url, api_key="sk_test_mistyped", max_retries=0
        )
    )
    queries.problems.succeeded()  # whatever an earlier test left open
    try:
        ada = next(iter(example_users()))
        sign_in(browser, app, ada)
        for _ in range(3):  # each load fails metrics and entitlements again
            wait_for(lambda: USER_MESSAGE in body(browser), timeout=PAGE_TIMEOUT)
            browser.refresh()
        wait_for(lambda: USER_MESSAGE in body(browser), timeout=PAGE_TIMEOUT)
        page = browser.page_source
        leaked = [word for word in OPERATOR_ADVICE if word.lower() in page.lower()]
        assert leaked == [], f"operator advice reached the browser: {leaked}"

        failures = queries.problems.open_problems().get("credentials", 0)
        assert failures >= 4, f"only {failures} failed requests: the test proves nothing"
        errors = [r.getMessage() for r in lines.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, errors
        assert "BILLINGOS_SECRET_KEY" in errors[0] and "sk_test_mistyped" not in errors[0]
    finally:
        billing_ui.configure(client_factory=right)
        operator.removeHandler(lines)
    # Back on the right key, the page recovers on reload.
    browser.refresh()
    wait_for(lambda: meter(browser, "api_calls"), timeout=PAGE_TIMEOUT)
    assert USER_MESSAGE not in body(browser)
