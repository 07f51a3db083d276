"""scripts/stress_e2e.py refuses to start runs without the e2e toolchain (the environment of
scripts/env.sh), saying what is missing, instead of burning runs of 84 setup errors each.

The script runs as a real process. The environments it refuses are real ones: the machine's
PATH without the repo's .tools (so Debian's node 20 and no bun), or a chromium path that does
not exist; the ready one is this test's own (loaded from scripts/env.sh, as `make test` does).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "stress_e2e.py"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        env=env, capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip


def test_without_env_sh_it_refuses_and_starts_no_run(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REFLEX_BUN_PATH"}
    env["PATH"] = "/usr/bin:/bin"  # the machine's own tools: no bun, Debian's node
    out = tmp_path / "runs"
    done = run(env, "--runs", "3", "--end", "23:59", "--out", str(out))
    assert done.returncode == 2, done.stdout + done.stderr
    assert "no run started" in done.stderr and "bun" in done.stderr, done.stderr
    assert ". scripts/env.sh" in done.stderr
    assert not out.exists(), "nothing recorded: no run was made"
    assert "[run" not in done.stdout


def test_a_missing_chromium_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "no-chromium"
    done = run({**os.environ, "BILLING_UI_CHROMIUM": str(missing)}, "--check")
    assert done.returncode == 2
    assert f"chromium is missing at {missing}" in done.stderr, done.stderr


def test_the_loaded_environment_is_ready() -> None:
    done = run(dict(os.environ), "--check")
    assert done.returncode == 0, done.stderr
    assert "toolchain is ready" in done.stdout
