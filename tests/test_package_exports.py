"""The package's public surface: every name resolves, and the framework-free parts (the
package itself, core, the server) never import Reflex: they must work in a FastAPI or Django
app without it."""

from __future__ import annotations

import subprocess
import sys

import pytest

import billing_ui


def _run(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_the_package_core_and_server_import_no_reflex() -> None:
    out = _run(
        "import sys, billing_ui, billing_ui.core, billing_ui.server, billing_ui.asgi;"
        "billing_ui.BillingClient; billing_ui.UsageMetric; billing_ui.QuotaExceededError;"
        "print(sorted(m for m in sys.modules if m == 'reflex' or m.startswith('reflex.')))"
    )
    assert out == "[]"


def test_every_public_name_resolves() -> None:
    for name in billing_ui.__all__:
        assert getattr(billing_ui, name) is not None, name
    assert callable(billing_ui.usage_meter)
    assert billing_ui.UsageMetricsState.__name__ == "UsageMetricsState"


def test_every_core_name_is_served_and_unknown_names_fail() -> None:
    import billing_ui.core as core

    for name in core.__all__:
        assert getattr(billing_ui, name) is getattr(core, name)
    try:
        billing_ui.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")


@pytest.mark.parametrize(
    "module",
    ["billing_ui.runtime", "billing_ui.settings", "billing_ui.states", "billing_ui.components"],
)
def test_each_entry_module_imports_first_in_a_fresh_process(module: str) -> None:
    """An app (or a benchmark) may import any of these before anything else of billing_ui; a
    circular import shows only in that order, never inside one pytest process that already
    imported the rest."""
    assert _run(f"import {module}; print('ok')") == "ok"
