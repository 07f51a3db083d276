"""Let a Reflex backend give memory back after a burst: the allocator setting of its server.

Call :func:`return_memory_after_bursts` at the top of the app's ``rxconfig.py``, before
``import reflex``::

    import billing_ui.server_memory

    billing_ui.server_memory.return_memory_after_bursts()

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

Nothing here touches CPython's or glibc's allocators: CPython keeps an arena while one
object in it lives, and ``malloc_trim`` gave back under 1 MB after the same flood (the
memory probe, ``BENCH_MEMORY_PROBE_TRIM=1``), so neither is done.
"""

from __future__ import annotations

import os

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
