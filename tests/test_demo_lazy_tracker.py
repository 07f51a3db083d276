"""Importing the demo app makes no outbox file and starts no thread: ``reflex run`` imports the
app in its compiling process too, which must not create them (issue 12). The tracker comes
with the backend's lifespan (``config.tracker_lifespan``) and goes with it.

In a fresh interpreter (a subprocess), so that nothing an earlier test imported or configured
counts, with the outbox pointed into a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import asyncio, json, sys, threading
from pathlib import Path

outbox = Path(sys.argv[1])
trackers = lambda: sorted(t.name for t in threading.enumerate() if t.name == "billing-tracker")

import billing_ui.billing_ui as demo  # what `reflex run` does in its compiling process
from billing_ui.demo import config
from billing_ui.settings import get_settings

seen = {"after_import": [outbox.exists(), trackers(), get_settings().track_outbox is not None]}
lifespan = config.tracker_lifespan in demo.app.get_lifespan_tasks()

async def backend_lifetime():
    async with config.tracker_lifespan():
        seen["running"] = [outbox.exists(), trackers(), get_settings().track_outbox is not None]
    seen["stopped"] = [outbox.exists(), trackers(), get_settings().track_outbox is not None]

asyncio.run(backend_lifetime())
print(json.dumps({"lifespan": lifespan, **seen}))
"""


def test_importing_the_demo_creates_no_outbox_and_no_thread(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox.db"
    env = {
        **os.environ,
        "BILLING_UI_OUTBOX_DB": str(outbox),
        "BILLINGOS_API_URL": "http://127.0.0.1:9",  # nothing is sent: no embedded server
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(outbox)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["after_import"] == [False, [], False]  # no file, no thread, no tracker
    assert seen["lifespan"]
    assert seen["running"] == [True, ["billing-tracker"], True]
    assert seen["stopped"] == [True, [], False]  # the file stays: it keeps what is queued
