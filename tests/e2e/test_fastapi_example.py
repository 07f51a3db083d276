"""The FastAPI example app (examples/fastapi_app) in headless chromium: sign in, the usage page,
the track button, the gate, a track queued while the billing API is down — the app served by
uvicorn on loopback, in front of the real local billing server (seeded demo customers) through
the fault proxy (tests/faults.py, to take the API down on demand), the page using nothing but
``fetch``."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from billing_ui.server.testing import RunningServer, running_server, serve_asgi
from tests.faults import FaultProxy, close

from .browser import click, fresh, wait_for

APP = Path(__file__).parents[2] / "examples" / "fastapi_app" / "app.py"


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[RunningServer]:
    with running_server(db_path=tmp_path / "billing.db", seed=True) as server:
        yield server


def load_example(
    monkeypatch: pytest.MonkeyPatch, billing: RunningServer, api_url: str, outbox: Path
) -> ModuleType:
    """The example module, fresh, its clients pointed at ``api_url`` (this test's billing
    server, through the fault proxy) and its outbox at ``outbox``."""
    monkeypatch.setenv("BILLINGOS_API_URL", api_url)
    monkeypatch.setenv("OUTBOX_PATH", str(outbox))
    monkeypatch.setenv("BILLINGOS_SECRET_KEY", billing.api_key)
    spec = importlib.util.spec_from_file_location("fastapi_example_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def api_calls_text(browser: webdriver.Chrome) -> str:
    return fresh(
        lambda: (
            browser.find_element(
                By.CSS_SELECTOR, 'tr[data-feature="api_calls"] td:nth-child(2)'
            ).text
        )
    )


def consumed(billing: RunningServer, customer: str) -> float:
    with billing.client() as http:
        metrics = http.get("/v1/usage/metrics", params={"customer_id": customer}).json()["metrics"]
    return float(next(m["consumed"] for m in metrics if m["feature_key"] == "api_calls"))


def test_sign_in_track_and_gate_in_chromium(
    browser: webdriver.Chrome,
    billing: RunningServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Signed in as Ada (Pro): the meter, the open gate, a track moves the meter by one. The
    billing API down: the page says the track is queued, with the count; back: the worker
    delivers it and the page converges to the server's number. Bob (Free): the gate is shut."""
    proxy = FaultProxy(billing.base_url).start()
    example = load_example(monkeypatch, billing, proxy.url, tmp_path / "outbox.db")
    with serve_asgi(example.app, name="example-app", lifespan="on") as url:
        browser.get(url)
        click(browser, By.ID, "as-ada")  # demo_pro
        before = consumed(billing, "demo_pro")
        wait_for(lambda: api_calls_text(browser) == f"{before:g} / 50000", timeout=20)
        gate = wait_for(
            lambda: (
                browser.find_element(By.ID, "gate").text.startswith("Included")
                and browser.find_element(By.ID, "gate")
            )
        )
        assert gate.get_attribute("class") == "ok"

        click(browser, By.ID, "track")
        wait_for(lambda: api_calls_text(browser) == f"{before + 1:g} / 50000", timeout=20)
        assert browser.find_element(By.ID, "track-status").text == "Recorded."
        assert consumed(billing, "demo_pro") == before + 1  # the billing database agrees

        proxy.on("/v1/usage/track", *[close()] * 1000)  # the billing API goes down
        proxy.on("/v1/usage/track-batch", *[close()] * 1000)
        click(browser, By.ID, "track")
        wait_for(
            lambda: (
                browser.find_element(By.ID, "track-status").text
                == "Queued, will be sent (1 waiting)."
            ),
            timeout=30,
        )
        assert api_calls_text(browser) == f"{before + 1:g} / 50000"  # it says only what it knows
        proxy.clear()  # back: the tracker's worker delivers the queued track
        wait_for(lambda: consumed(billing, "demo_pro") == before + 2, timeout=30)
        browser.refresh()
        wait_for(lambda: api_calls_text(browser) == f"{before + 2:g} / 50000", timeout=20)

        click(browser, By.ID, "signout")
        click(browser, By.ID, "as-bob")  # demo_free: no priority support
        wait_for(
            lambda: (
                browser.find_element(By.ID, "gate").text
                == "Upgrade to Pro to get priority support."
            ),
            timeout=20,
        )
        free_before = consumed(billing, "demo_free")
        wait_for(lambda: api_calls_text(browser) == f"{free_before:g} / 1000", timeout=20)
        # The session cookie is HttpOnly: the page's script cannot read (or leak) it.
        assert browser.execute_script("return document.cookie") == ""
    proxy.stop()
    assert consumed(billing, "demo_pro") == before + 2  # nothing doubled by the redelivery
