"""Test billing_ui on the lowest and the newest Reflex that pyproject.toml allows.

    python scripts/reflex_range.py          # (make reflex-range; .ci/run runs it after make test)

The supported range is the ``reflex`` requirement of the ``reflex`` extra. The versions come
from the package index pip is configured with (``pip index versions reflex``), pre-releases
left out. A version that the project's own ``.venv`` already runs is covered by ``make test``;
any other gets a venv of its own under ``.tools/reflex-<version>`` and a bounded run of the
state tests, the Reflex-internals guard and the toolchain smoke test (an app built with bun,
driven by headless chromium).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/states", "tests/test_reflex_internals.py", "tests/e2e/test_toolchain_smoke.py"]


def supported() -> SpecifierSet:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = [
        r for r in extras["optional-dependencies"]["reflex"] if r.startswith("reflex")
    ]
    return SpecifierSet(re.sub(r"^reflex\s*", "", requirement))


def available() -> list[Version]:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "reflex"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    listed = re.search(r"Available versions: (.*)", out)
    if listed is None:
        raise SystemExit(f"pip index gave no version list:\n{out}")
    return sorted(Version(v) for v in listed.group(1).split(", "))


def run_in_own_venv(target: Version) -> int:
    venv = ROOT / ".tools" / f"reflex-{target}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "-e", f"{ROOT}[server,reflex,redis]",
         f"reflex[testing]=={target}", "pytest>=8", "pytest-asyncio>=0.24", "hypothesis>=6.100"],
        check=True,
    )  # fmt: skip
    env = {**os.environ, "VIRTUAL_ENV": str(venv), "PATH": f"{venv / 'bin'}:{os.environ['PATH']}"}
    command = [str(python), "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS]
    return subprocess.run(command, cwd=ROOT, env=env, timeout=900).returncode


def main() -> int:
    spec = supported()
    versions = [v for v in available() if v in spec and not v.is_prerelease]
    if not versions:
        print(f"no released Reflex in {spec} on the index", file=sys.stderr)
        return 1
    ends = sorted({versions[0], versions[-1]})
    installed = Version(version("reflex"))
    listed, tested = [str(v) for v in versions], [str(v) for v in ends]
    print(f"reflex {spec}: on the index {listed}; testing {tested}")
    status = 0
    for target in ends:
        if target == installed:
            print(f"reflex {target}: the project's .venv, covered by `make test`")
            continue
        print(f"reflex {target}: own venv, {' '.join(TESTS)}", flush=True)
        status = status or run_in_own_venv(target)
    return status


if __name__ == "__main__":
    sys.exit(main())
