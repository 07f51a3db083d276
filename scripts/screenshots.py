"""Screenshots of the running demo app for the README, in light and dark mode.

    python scripts/screenshots.py                 # starts `reflex run` itself (embedded server)
    python scripts/screenshots.py --url http://localhost:3000   # an app that is already up

Without ``--url`` it runs the demo as ``make demo`` does — ``reflex run`` from the repo root,
against the local billing server seeded with the demo customers — but in production mode, on
its own ports and a temporary database, so it neither disturbs nor depends on a demo you may
have running. The billing server runs in this process (``BILLINGOS_API_URL`` points the demo at
it), so the script can stop it for the "outage" pictures and start it again. Pages are shot in
headless Debian chromium (1280 px wide, full height) once every meter, chart and gate has
rendered, with CSS transitions off, into ``docs/img/``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the browser helpers live in tests/e2e

from billing_ui.server.clock import SystemClock  # noqa: E402
from billing_ui.server.testing import RunningServer, running_server  # noqa: E402
from tests.e2e.browser import chromium, wait_for  # noqa: E402
from tests.e2e.demo import go, sign_in_at  # noqa: E402

OUT = REPO / "docs" / "img"
WIDTH = 1280
START_TIMEOUT_S = 180.0
REFRESH_S = 3
"""The demo's refresh interval here: short, so an outage shows within seconds."""
NO_MOTION = (
    "*,*::before,*::after{transition:none!important;animation:none!important}"
    "html{scrollbar-width:none}"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BillingServer:
    """The local billing server on a fixed port and database, which the script can stop (an
    outage, as the demo sees it) and start again."""

    def __init__(self, db: Path) -> None:
        self.db, self.port = db, _free_port()
        self._running: AbstractContextManager[RunningServer] | None = None
        self.api_key = ""

    def start(self, *, seed: bool = False) -> None:
        self._running = running_server(
            db_path=self.db, port=self.port, seed=seed, clock=SystemClock()
        )
        self.api_key = self._running.__enter__().api_key

    def stop(self) -> None:
        if self._running is not None:
            running, self._running = self._running, None
            running.__exit__(None, None, None)

    @contextmanager
    def down(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextmanager
def reflex_run(billing: BillingServer) -> Iterator[str]:
    """``reflex run`` in its own process group; yields the frontend URL once it is up."""
    env = {
        **os.environ,
        "BILLINGOS_API_URL": billing.url,
        "BILLINGOS_SECRET_KEY": billing.api_key,
        "BILLING_UI_REFRESH_INTERVAL": str(REFRESH_S),
    }
    # Production mode: a built frontend, and no hot reload (which would restart the backend,
    # and drop the session, whenever a file of the repo changes mid-run).
    cmd = [
        sys.executable, "-m", "reflex", "run", "--env", "prod", "--single-port",
        "--backend-port", str(_free_port()),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    url: str | None = None
    log: list[str] = []
    timer = threading.Timer(START_TIMEOUT_S, lambda: os.killpg(proc.pid, signal.SIGTERM))
    timer.start()
    for line in proc.stdout:
        log.append(line)
        if match := re.search(r"App running at: (http://\S+)", line):
            url = match.group(1)
            break
    timer.cancel()
    if url is None:
        raise RuntimeError("`reflex run` did not start:\n" + "".join(log[-40:]))
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
    try:
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def settled(page: WebDriver) -> bool:
    """Nothing is loading: no skeleton, every chart drawn, every gate decided."""
    if page.find_elements(By.CSS_SELECTOR, ".rt-Skeleton"):
        return False
    charts = page.find_elements(By.CSS_SELECTOR, '[data-testid="usage-chart"]')
    drawn = page.find_elements(By.CSS_SELECTOR, '[data-testid="usage-chart"] .recharts-area')
    return len(drawn) == len(charts)


def shoot(page: WebDriver, name: str) -> Path:
    wait_for(lambda: settled(page), timeout=30)
    page.execute_script(
        "const s=document.createElement('style');s.textContent=arguments[0];"
        "document.head.appendChild(s);",
        NO_MOTION,
    )
    height = page.execute_script("return document.documentElement.scrollHeight")
    page.set_window_size(WIDTH, int(height) + 140)  # + the window's own chrome
    wait_for(lambda: settled(page), timeout=30)
    path = OUT / f"{name}.png"
    page.save_screenshot(str(path))
    page.set_window_size(WIDTH, 900)
    print(f"wrote {path.relative_to(REPO)}")
    return path


def set_mode(page: WebDriver, mode: str) -> None:
    """Light or dark, the way a visitor picks it: Reflex keeps it in localStorage."""
    page.execute_script("localStorage.setItem('theme', arguments[0])", mode)
    page.refresh()
    wait_for(
        lambda: (
            page.execute_script("return document.documentElement.classList.contains('dark')")
            == (mode == "dark")
        ),
        timeout=30,
    )


def shoot_all(url: str, billing: BillingServer | None) -> list[Path]:
    OUT.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    with chromium() as page:
        page.set_window_size(WIDTH, 900)
        for mode in ("light", "dark"):
            page.get(url)
            set_mode(page, mode)
            wait_for(lambda: page.find_elements(By.ID, "sign-in-demo_free"), timeout=60)
            shots.append(shoot(page, f"sign-in-{mode}"))

            sign_in_at(page, url, "demo_free")  # 85 % of its API calls: the nudge shows
            shots.append(shoot(page, f"dashboard-{mode}"))
            go(page, "playground")
            seats = wait_for(lambda: page.find_element(By.ID, "track-seats"), timeout=30)
            if mode == "light":  # the third of three seats: the hard limit
                wait_for(lambda: page.find_elements(By.CSS_SELECTOR, '[data-feature-key="seats"]'))
                seats.click()
            wait_for(lambda: not page.find_element(By.ID, "track-seats").is_enabled())
            shots.append(shoot(page, f"playground-{mode}"))
            go(page, "security")
            shots.append(shoot(page, f"security-locked-{mode}"))

            page.find_element(By.CSS_SELECTOR, '[data-testid="sign-out"]').click()
            sign_in_at(page, url, "demo_enterprise")
            go(page, "security")
            wait_for(lambda: page.find_elements(By.CSS_SELECTOR, '[data-testid="sso-settings"]'))
            shots.append(shoot(page, f"security-unlocked-{mode}"))
            if billing is not None:
                shots.append(shoot_outage(page, billing, mode))
            page.find_element(By.CSS_SELECTOR, '[data-testid="sign-out"]').click()
            shots.append(shoot_signed_out(page, url, mode))
    return shots


def shoot_signed_out(page: WebDriver, url: str, mode: str) -> Path:
    """The dashboard opened by a visitor who is not signed in."""
    wait_for(lambda: page.find_elements(By.ID, "sign-in-demo_free"), timeout=30)
    page.get(url.rstrip("/") + "/dashboard")
    wait_for(
        lambda: "Sign in to see your usage" in page.find_element(By.TAG_NAME, "body").text,
        timeout=30,
    )
    return shoot(page, f"signed-out-{mode}")


def shoot_outage(page: WebDriver, billing: BillingServer, mode: str) -> Path:
    """The dashboard of a signed-in customer whose data loaded, after the billing server went
    down: the last known data with the outage said (the Retry reaches a dead server)."""
    go(page, "dashboard")
    wait_for(lambda: page.find_elements(By.CSS_SELECTOR, '[data-testid="usage-meter"]'))
    charts = len(
        wait_for(lambda: page.find_elements(By.CSS_SELECTOR, '[data-testid="usage-chart"]'))
    )
    wait_for(  # every chart drawn before the outage: there is data to keep
        lambda: len(page.find_elements(By.CSS_SELECTOR, '[data-testid="chart-total"]')) == charts
    )
    with billing.down():  # the next refresh (REFRESH_S) fails
        # The meters and the charts refresh in their own loops, so each says the outage on its
        # own tick: shoot once every one of them does, not at the first (the picture used to
        # catch one chart "Not up to date" and the next one before its tick).
        wait_for(
            lambda: (
                "temporarily unavailable" in page.find_element(By.TAG_NAME, "body").text
                and len(page.find_elements(By.CSS_SELECTOR, '[data-testid="chart-stale"]'))
                == charts
            ),
            timeout=60,
        )
        return shoot(page, f"outage-{mode}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="shoot this running app instead of starting one")
    args = parser.parse_args()
    if args.url:
        shoot_all(args.url, None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        billing = BillingServer(Path(tmp) / "billing.db")
        billing.start(seed=True)
        try:
            with reflex_run(billing) as url:
                shoot_all(url, billing)
        finally:
            billing.stop()


if __name__ == "__main__":
    main()
