"""Screenshots of the running demo app for the README, in light and dark mode.

    python scripts/screenshots.py                 # starts `reflex run` itself (embedded server)
    python scripts/screenshots.py --url http://localhost:3000   # an app that is already up

Without ``--url`` it runs the demo as ``make demo`` does — ``reflex run`` from the repo root,
the embedded billing server seeding the demo customers — but in production mode, on its own
port and a temporary database, so it neither disturbs nor depends on a demo you may have
running. Pages
are shot in headless Debian chromium (1280 px wide, full height) once every meter, chart and
gate has rendered, with CSS transitions off, into ``docs/img/``.
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
from contextlib import contextmanager
from pathlib import Path

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the browser helpers live in tests/e2e

from tests.e2e.browser import chromium, wait_for  # noqa: E402
from tests.e2e.demo import go, sign_in_at  # noqa: E402

OUT = REPO / "docs" / "img"
WIDTH = 1280
START_TIMEOUT_S = 180.0
NO_MOTION = (
    "*,*::before,*::after{transition:none!important;animation:none!important}"
    "html{scrollbar-width:none}"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def reflex_run(db: Path) -> Iterator[str]:
    """``reflex run`` in its own process group; yields the frontend URL once it is up."""
    env = {
        **os.environ,
        "BILLING_UI_DB": str(db),
        "BILLING_UI_PORT": str(_free_port()),
        "BILLING_UI_REFRESH_INTERVAL": "30",
    }
    env.pop("BILLINGOS_API_URL", None)  # the embedded server, as on a fresh machine
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


def shoot_all(url: str) -> list[Path]:
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
            page.find_element(By.CSS_SELECTOR, '[data-testid="sign-out"]').click()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="shoot this running app instead of starting one")
    args = parser.parse_args()
    if args.url:
        shoot_all(args.url)
        return
    with tempfile.TemporaryDirectory() as tmp, reflex_run(Path(tmp) / "billing.db") as url:
        shoot_all(url)


if __name__ == "__main__":
    main()
