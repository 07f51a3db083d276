"""Start ``python -m billing_ui.server`` in its own process for a benchmark, the way a user
would, and know its URL as soon as uvicorn says it is listening (no polling)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def server_process(db: Path, *extra: str) -> Iterator[str]:
    """Yield the base URL of a server on ``db`` (no seed, no rate limit, no access log)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [
        sys.executable, "-m", "billing_ui.server", "--port", "0", "--db", str(db),
        "--no-seed", "--rate-limit-per-minute", "0", "--no-access-log", *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    url = None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "Uvicorn running on" in line:
            url = line.split("running on ")[1].split()[0]
            break
    if url is None:
        proc.wait()
        raise RuntimeError("server did not start:\n" + "".join(lines))
    # Keep draining stderr so the server never blocks on a full pipe.
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
