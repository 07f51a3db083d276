"""``reflex run`` of the demo app as a child process group on a free loopback port, stopped
whole when the block ends: what ``make demo-scaled`` (:mod:`billing_ui.demo.scaled`) and the
benchmarks' backends (``bench/_reflex_backend.py``) both start.

Its own session (process group), so that stopping it stops what ``reflex run`` started too
(granian's workers, the frontend server), and nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
"""The repository, whose ``rxconfig.py`` names the demo app."""

__all__ = ["free_port", "reflex_run"]


def free_port() -> int:
    """A loopback port the OS says is free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextlib.contextmanager
def reflex_run(
    args: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    stop_timeout_s: float = 30.0,
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Run ``python -m reflex run <args>`` in the repository, its backend on a free loopback
    port, with ``env`` added to this process's environment (and the repository on
    ``PYTHONPATH``); its output goes to ``log_path``. Yields the process and the port, without
    waiting for it to answer. When the block ends: SIGTERM to its process group, SIGKILL after
    ``stop_timeout_s``."""
    port = free_port()
    command = [
        sys.executable, "-m", "reflex", "run", *args,
        "--backend-host", "127.0.0.1", "--backend-port", str(port), "--loglevel", "warning",
    ]  # fmt: skip
    full_env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        **env,
    }
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            command, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
