"""The allocator setting that lets a Reflex backend give memory back after a burst
(``billing_ui/server_memory.py``): set before the server starts, never over an operator's own.

What it does to the backend's RSS is measured by ``bench/many_sockets.py`` (``rss_*``
figures) and the memory probe (``bench/_memory_probe``), not here: a flood takes minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from billing_ui import server_memory

REPO = Path(__file__).resolve().parents[1]


def test_sets_granians_jemalloc_to_purge_unless_the_operator_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(server_memory.JEMALLOC_ENV, raising=False)
    assert server_memory.return_memory_after_bursts() is True
    conf = os.environ[server_memory.JEMALLOC_ENV]
    assert conf == server_memory.JEMALLOC_CONF
    assert dict(o.split(":") for o in conf.split(",")) == {
        "dirty_decay_ms": "0",
        "muzzy_decay_ms": "0",
    }
    monkeypatch.setenv(server_memory.JEMALLOC_ENV, "dirty_decay_ms:5000")
    assert server_memory.return_memory_after_bursts() is False
    assert os.environ[server_memory.JEMALLOC_ENV] == "dirty_decay_ms:5000"


def test_the_demos_rxconfig_sets_it_before_reflex_is_imported() -> None:
    """``reflex run`` imports rxconfig.py first; the server's library reads the variable when
    it starts, so it must be set by then (and before Reflex, to be safe)."""
    code = f"import os, rxconfig; print(os.environ.get({server_memory.JEMALLOC_ENV!r}))"
    env = {k: v for k, v in os.environ.items() if k != server_memory.JEMALLOC_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == server_memory.JEMALLOC_CONF
    source = (REPO / "rxconfig.py").read_text()
    assert source.index("return_memory_after_bursts()") < source.index("\nimport reflex")


async def test_the_closed_tabs_sweep_ends_at_once_where_memory_is_the_only_copy() -> None:
    """On Reflex's memory state manager the tab trees are the only copy: the lifespan task ends
    at its first sweep and drops nothing (the drop itself is tested on the demo's real backend:
    ``tests/e2e/test_closed_tab_states.py``)."""
    import asyncio
    from types import SimpleNamespace

    from reflex.istate.manager.memory import StateManagerMemory
    from reflex.istate.manager.token import BaseStateToken

    from billing_ui.states.metrics import UsageMetricsState

    manager = StateManagerMemory()
    token = BaseStateToken(ident="tab-1", cls=UsageMetricsState)
    await manager.get_state(token)
    app = SimpleNamespace(_state_manager=manager)
    await asyncio.wait_for(server_memory.release_closed_tabs(app, every_s=0.01, idle_s=0), 10)
    assert token.cache_key in manager.states
    await manager.close()


def test_the_heap_is_trimmed_on_glibc() -> None:
    assert server_memory.trim_heap() is True  # Debian's Python runs on glibc
