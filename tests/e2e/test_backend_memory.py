"""After a burst of tabs, the demo's backend gives its server's socket memory back (issues 8 §4,
12 §3: the backend's RSS after a flood).

Why: Reflex's production server (granian) keeps its sockets' buffers in jemalloc, outside every
Python allocator; by default jemalloc kept what 200 tabs used (about 30 MB) in a backend that
went quiet. ``billing_ui.server_memory.return_memory_after_bursts()`` (the demo's rxconfig.py)
sets it to purge at once. The demo's backend runs as its own process; raw socket.io clients
play the tabs; the memory probe (``bench/_memory_probe``, loaded into the backend only through
its ``PYTHONPATH``) reports CPython's arenas and glibc's heap, and this test reads the
process's anonymous memory from ``/proc``: what is left is memory no Python allocator holds.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from bench import many_sockets
from bench._reflex_backend import ReflexBackend, reflex_backend
from bench.many_sockets import BACKEND_ENV, FLOOD_CUSTOMER, signed_in_tab
from billing_ui.server.testing import server_process

TABS = 100
GREW_MB = 6.0
"""The tabs must have grown the server's memory by this much, or the test shows nothing."""
LEFT_MB = 3.0
"""What may stay of it once they closed (the old setting kept nearly all of it)."""


def _outside_python_mb(backend: ReflexBackend, folder: Path, tag: str) -> float:
    """The backend's anonymous memory less CPython's arenas and glibc's heap, MB (the probe's
    report for ``tag`` and ``/proc``, read right after it)."""
    many_sockets.probe(backend, tag, timeout=60)
    report = (folder / f"{tag}.{backend.process.pid}.txt").read_text()
    rollup = Path(f"/proc/{backend.process.pid}/smaps_rollup").read_text()
    anon_kb = int(re.search(r"^Anonymous:\s+(\d+) kB", rollup, re.M)[1])  # type: ignore[index]
    arenas = int(re.search(r"arenas allocated current\s+=\s+([\d,]+)", report)[1].replace(",", ""))  # type: ignore[index]
    glibc = re.search(r"arena=([\d.]+) .*hblkhd=([\d.]+)", report)
    assert glibc is not None, report
    return anon_kb / 1024 - arenas - float(glibc[1]) - float(glibc[2])


def test_the_servers_socket_memory_goes_back_after_a_burst_of_tabs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "probe"
    folder.mkdir()
    monkeypatch.setenv(many_sockets.PROBE_ENV, str(folder))
    monkeypatch.delenv("_RJEM_MALLOC_CONF", raising=False)  # the demo's rxconfig sets it
    env = {**BACKEND_ENV, **many_sockets.probe_env()}
    with (
        server_process(db_path=tmp_path / "billing.db") as srv,
        reflex_backend({**env, "BILLINGOS_API_URL": srv.base_url}, tmp_path / "backend.log") as be,
    ):
        asyncio.run(many_sockets.flood(be.url, 1, 1, 60))  # warm-up: states compiled
        before = _outside_python_mb(be, folder, "before")

        async def burst() -> float:
            tabs = await asyncio.gather(
                *(signed_in_tab(be.url, FLOOD_CUSTOMER) for _ in range(TABS))
            )
            for tab in tabs:  # every socket busy: its buffers in use
                await tab.hydrate()
            open_mb = await asyncio.to_thread(_outside_python_mb, be, folder, "open")
            await asyncio.gather(*(tab.close() for tab in tabs))
            return open_mb

        grew = asyncio.run(burst()) - before
        assert grew > GREW_MB, f"{TABS} tabs grew the server's memory by {grew:.1f} MB only"
        deadline, n, left = time.monotonic() + 60, 0, grew
        while left > LEFT_MB and time.monotonic() < deadline:
            n += 1
            left = _outside_python_mb(be, folder, f"closed{n}") - before
            time.sleep(0.5)
        assert left <= LEFT_MB, f"{left:.1f} of {grew:.1f} MB kept after the tabs closed"
