"""How long a new user's first ``make demo`` takes: clone this repo's HEAD into a temporary
directory, run ``make demo`` there (bootstrap, then ``reflex run``), and time it until the
sign-in page is rendered in headless chromium with the demo customers the backend sent. Then
stop it and delete the clone.

Two runs: ``cold`` (empty pip, npm and bun caches, as on a new machine: everything is
downloaded from the registries) and ``warm`` (the caches as they are). Free loopback ports
only. ``--write`` puts the figures into README.md between the ``first-run`` markers::

    . scripts/env.sh && python scripts/first_run.py --write
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from selenium.webdriver.common.by import By  # noqa: E402

from tests.e2e.browser import chromium, wait_for  # noqa: E402

README = ROOT / "README.md"
MARK = re.compile(r"(<!-- first-run -->).*?(<!-- /first-run -->)", re.S)
TIMEOUT_S = 900.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def measure(cold: bool) -> dict[str, float]:
    """One fresh clone's ``make demo``: seconds to the end of the bootstrap, to both servers
    answering HTTP, and to the rendered sign-in page; then ``make demo`` again in the same
    clone (``second_run_s``)."""
    work = Path(tempfile.mkdtemp(prefix="billing-ui-first-run-"))
    clone = work / "billing_ui"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "REFLEX_BUN_PATH")}
    # The clone must use its own .venv and bun, not this checkout's.
    env["PATH"] = ":".join(p for p in env["PATH"].split(":") if not p.startswith(str(ROOT)))
    if cold:
        env |= {
            "PIP_NO_CACHE_DIR": "1",
            "npm_config_cache": str(work / "npm-cache"),
            "BUN_INSTALL_CACHE_DIR": str(work / "bun-cache"),
        }
    try:
        figures = run_demo(clone, env, work / "demo.log")
        figures["second_run_s"] = run_demo(clone, env, work / "demo2.log")["page_shown_s"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return figures


def run_demo(clone: Path, env: dict[str, str], log_path: Path) -> dict[str, float]:
    """``make demo`` in ``clone`` on free ports until the sign-in page shows, then stop it."""
    front, back = free_port(), free_port()
    env = env | {
        "REFLEX_FRONTEND_PORT": str(front),
        "REFLEX_BACKEND_PORT": str(back),
        "BILLING_UI_PORT": str(free_port()),
    }
    figures: dict[str, float] = {}
    with log_path.open("w") as log:
        start = time.monotonic()
        proc = subprocess.Popen(
            ["make", "demo"],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:

            def up() -> bool:
                text = log_path.read_text()
                if proc.poll() is not None:
                    raise RuntimeError(f"make demo exited: {text[-2000:]}")
                if "bootstrap_s" not in figures and "reflex run" in text:
                    figures["bootstrap_s"] = round(time.monotonic() - start, 1)
                return answers(f"http://127.0.0.1:{front}/") and answers(
                    f"http://127.0.0.1:{back}/ping"
                )

            wait_for(up, timeout=TIMEOUT_S, interval=0.5)
            figures["servers_up_s"] = round(time.monotonic() - start, 1)
            with chromium() as browser:
                browser.get(f"http://127.0.0.1:{front}/")
                wait_for(
                    lambda: "demo_pro" in browser.find_element(By.TAG_NAME, "body").text,
                    timeout=TIMEOUT_S,
                )
            figures["page_shown_s"] = round(time.monotonic() - start, 1)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return figures


def sentence(result: dict[str, Any]) -> str:
    runs = [result["cold"], result["warm"]]

    def span(key: str) -> str:
        low, high = sorted(round(run[key]) for run in runs)
        return f"{low} s" if low == high else f"{low}-{high} s"

    return (
        f"A fresh clone's first `make demo` takes about {span('page_shown_s')} until the "
        f"sign-in page shows: {span('bootstrap_s')} in `scripts/bootstrap.sh` (the Python "
        f"packages into `.venv`, bun and Node.js into `.tools`), "
        f"the rest Reflex installing the frontend's packages and compiling. A second `make "
        f"demo` in the same checkout takes {span('second_run_s')}. (`scripts/first_run.py`, "
        f"on this project's 2-CPU machine, once with empty pip/npm/bun caches and once with "
        f"warm ones, load average {result['load_average']:.1f} while it ran.)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md")
    parser.add_argument("--from-json", help="reuse a previous run's JSON output")
    args = parser.parse_args()
    result: dict[str, Any]
    if args.from_json:
        result = json.loads(args.from_json)
    else:
        result = {"cold": measure(cold=True), "warm": measure(cold=False)}
        result["load_average"] = os.getloadavg()[1]  # the last 5 minutes
    print(json.dumps(result))
    text = sentence(result)
    print(text)
    if args.write:
        readme = README.read_text()
        if not MARK.search(readme):
            raise SystemExit("README.md has no <!-- first-run --> markers")
        README.write_text(MARK.sub(lambda m: f"{m[1]}\n{text}\n{m[2]}", readme))


if __name__ == "__main__":
    main()
