"""Let a Reflex backend give memory back after a burst: the allocator setting of its server,
and closed tabs' states out of its memory.

Call :func:`return_memory_after_bursts` at the top of the app's ``rxconfig.py``, before
``import reflex``, and register :func:`release_closed_tabs` with the app::

    import billing_ui.server_memory

    billing_ui.server_memory.return_memory_after_bursts()  # rxconfig.py

    app.register_lifespan_task(billing_ui.server_memory.release_closed_tabs)  # the app module

Why: Reflex's production server, granian, keeps its sockets' buffers (Rust) in jemalloc,
which by default holds freed pages for 10 s and purges them only while it allocates more. A
backend that went quiet after a burst (hundreds of tabs open at once, then closed) therefore
kept them for good: measured with ``bench/many_sockets.py`` (200 tabs x 20 tracks), about
30 MB of its RSS after the flood was in no Python or glibc heap (the memory probe's RSS less
CPython's arenas, glibc's ``mallinfo2`` and the mapped files), and gone with jemalloc set to
purge at once (a 1 s decay gave nothing back: jemalloc purges only while it allocates, and
its background purge thread does not run in granian's forked worker). jemalloc reads its
settings once, when the server's library starts (granian's jemalloc reads
``_RJEM_MALLOC_CONF``), so this can only be an environment
variable set before ``reflex run`` starts the server: ``rxconfig.py`` is the app's file that
``reflex run`` imports first. An operator's own value of the variable wins.

Why :func:`release_closed_tabs`: Reflex's disk state manager (its default without Redis) writes
every tab's states to a file and keeps them in memory too, until ``redis_token_expiration`` (an
hour by default) after their last use, whether the tab is still open or not. A burst of tabs,
or one script opening socket after socket with new tokens, thus held every closed tab's state
tree for an hour (the memory probe, ``BENCH_MEMORY_PROBE=<dir>`` with
``BENCH_MEMORY_PROBE_TRIM=1``, shows their size, the trees expired or not). The task writes a
closed tab's whole tree to disk under its lock, then drops it from memory; a tab that comes
back loads it, as after the manager's own expiry, so nothing a tab had is lost (the manager
writes only what an event changed and deletes files an hour old, tree in memory or not: without
the whole write, a tab open for longer than that would lose its older parts; the files are
purged on the manager's schedule, an hour after this write). After a sweep that dropped any,
glibc's ``malloc_trim(0)`` hands back the free pages of its heap (milliseconds, once per such
sweep). CPython's own arenas are not glibc's heap: an arena goes back only once every object in
it is freed, so how much of a burst's memory leaves the process depends on the allocator Python
runs on (``docs/architecture.md``, "Backend RSS after the flood").
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0
"""How often :func:`release_closed_tabs` looks for closed tabs' states."""
CLOSED_TAB_IDLE_S = 10.0
"""A tab's states stay in memory this long after their last use with no socket: a reload
reconnects well within it (and a tab that comes back later loads them from disk)."""

JEMALLOC_ENV = "_RJEM_MALLOC_CONF"
"""The variable granian's jemalloc (``tikv-jemallocator``, prefixed build) reads."""
JEMALLOC_CONF = "dirty_decay_ms:0,muzzy_decay_ms:0"
"""Freed pages go back to the OS when they are freed (jemalloc's default keeps them 10 s and
purges only while allocating); ``muzzy_decay_ms:0``: straight back, not
first ``MADV_FREE``-d (which still counts in RSS until the kernel needs the memory)."""


def return_memory_after_bursts() -> bool:
    """Set granian's jemalloc to return freed memory at once, unless the environment
    already sets it; whether it was set here. Effective only before the server starts (at the
    top of ``rxconfig.py``)."""
    if JEMALLOC_ENV in os.environ:
        return False
    os.environ[JEMALLOC_ENV] = JEMALLOC_CONF
    return True


async def release_closed_tabs(
    app: Any, every_s: float = SWEEP_EVERY_S, idle_s: float = CLOSED_TAB_IDLE_S
) -> None:
    """Reflex lifespan task (``app.register_lifespan_task(release_closed_tabs)``; Reflex passes
    the app): every ``every_s``, drop from memory the states of tabs that have had no socket on
    this worker and no use for ``idle_s`` (on Reflex's disk state manager, where they are also
    on disk; see the module's docstring), count them (``billing_ui_tab_states_released_total``)
    and those that stay (``billing_ui_tab_states``), and trim glibc's heap after a sweep that
    dropped any. Ends at once on the memory state manager (the states in memory are the only
    copy) and on Redis (none is kept between events)."""
    from billing_ui.core import metrics
    from billing_ui.states import _reflex_internals as internals

    while True:
        await asyncio.sleep(every_s)
        mode = internals.state_manager_mode(app)
        if mode in ("memory", "redis"):
            log.debug("billing_ui: tab states live in %s; nothing to release", mode)
            return
        try:
            swept = await internals.drop_closed_tabs(app, idle_s)
        except Exception:  # a Reflex change, say: logged each time, and the next sweep tries
            log.exception("billing_ui: the sweep of closed tabs' states failed")
            continue
        if swept is None:
            continue
        metrics.current().tab_states.set(swept.kept)
        if swept.dropped:
            metrics.current().tab_states_released.inc(swept.dropped)
            trim_heap()


def trim_heap() -> bool:
    """glibc's ``malloc_trim(0)``: free pages of its heap back to the system (whether it could
    be called: not on another C library)."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim(0)
    return True


def _libc() -> Any:
    try:
        return ctypes.CDLL(None)  # the process's own symbols: its C library among them
    except OSError:  # pragma: no cover - every Linux and macOS Python can
        return None
