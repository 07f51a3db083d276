"""What the e2e suite needs from the machine, checked with the standard library alone: the
e2e conftest fails the session on it, and ``scripts/stress_e2e.py`` refuses to start its runs
(it may be started by a python that lacks the suite's packages, before ``scripts/env.sh``).

Everything comes from ``scripts/bootstrap.sh`` and is put first on ``PATH`` by
``scripts/env.sh``: Debian's chromium and chromedriver, bun >= 1.4.4 (below it Reflex downloads
bun from the internet) and node >= 22.22 (with Debian's node 20 Reflex warns on every run and
forces bun's own runtime: not the environment the suite is known to pass in).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Final

CHROMIUM: Final = os.environ.get("BILLING_UI_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER: Final = os.environ.get("BILLING_UI_CHROMEDRIVER", "/usr/bin/chromedriver")
MIN_BUN: Final = (1, 4, 4)  # reflex 0.10.1's minimum
MIN_NODE: Final = (22, 22)
HINT: Final = "run `make test`, or `bash scripts/bootstrap.sh && . scripts/env.sh`"


def version_of(executable: str) -> tuple[int, ...] | None:
    """``executable --version`` as numbers (``v22.23.3`` -> (22, 23, 3)); None if it fails."""
    try:
        out = subprocess.run(
            [executable, "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else None


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def problems() -> list[str]:
    """What is missing or too old, one sentence each (empty: the toolchain is ready)."""
    found = [
        f"{name} is missing at {path}"
        for name, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER))
        if not os.access(path, os.X_OK)
    ]
    bun = os.environ.get("REFLEX_BUN_PATH") or shutil.which("bun")
    bun_version = version_of(bun) if bun and os.access(bun, os.X_OK) else None
    if bun_version is None:
        found.append(f"no working bun (REFLEX_BUN_PATH or PATH; found: {bun or 'none'})")
    elif bun_version < MIN_BUN:
        found.append(f"{bun} is bun {_dotted(bun_version)}, Reflex needs >= {_dotted(MIN_BUN)}")
    node = shutil.which("node")
    node_version = version_of(node) if node else None
    if node_version is None:
        found.append("no node on PATH")
    elif node_version[:2] < MIN_NODE:
        found.append(f"{node} is node {_dotted(node_version)}, the suite runs on >= 22.22")
    if os.environ.get("REFLEX_USE_NPM", "0").lower() in ("1", "true", "yes"):
        found.append("REFLEX_USE_NPM is set: npm would need node >= 22.22")
    return found
