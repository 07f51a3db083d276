"""The README's install route works: ``pip install ./billing_ui[...]`` from a checkout gives a
package that runs on its own, outside the checkout (no editable links back into the repo).

The wheel is built by pip exactly as ``pip install <checkout>`` builds it, installed into a
temporary directory, and used from a process whose working directory is elsewhere; the test
checks it is that copy that runs, with its data files (the plans, ``py.typed``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pip(*args: str, cwd: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    )


def test_the_package_installed_from_a_checkout_runs_outside_it(tmp_path: Path) -> None:
    pip("wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(ROOT), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("billing_ui-*.whl")
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)

    code = (
        "import billing_ui, billing_ui.components, billing_ui.server.plans as p;"
        "from pathlib import Path;"
        "print(billing_ui.__file__);"
        "print(sorted(p.load_plans().products)[:1]);"
        "print((Path(billing_ui.__file__).parent / 'py.typed').exists())"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    where, plans, typed = out.stdout.strip().splitlines()
    assert Path(where).is_relative_to(site), f"imported {where}, not the installed copy"
    assert plans != "[]" and typed == "True"

    server = subprocess.run(
        [sys.executable, "-m", "billing_ui.server", "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert server.returncode == 0 and "--port" in server.stdout, server.stderr[-2000:]


def test_the_readme_explains_every_extra() -> None:
    """The Install section's table has a row per extra of pyproject.toml."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    readme = (ROOT / "README.md").read_text()
    install = readme.split("\n## Install\n", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in extras if f"| `{name}` |" not in install]
    assert missing == [], f"README's Install section does not explain {missing}"
