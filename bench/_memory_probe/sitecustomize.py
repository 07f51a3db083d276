"""A memory report on request from every Python process of a benchmark (off unless asked).

Why: to tell what a backend's RSS after a flood is made of — live objects (what by type), or
memory the allocators keep (CPython's arenas, glibc's heap) — in the backend process itself,
with no hook in the product. ``bench/many_sockets.py`` puts this folder on the backend's
``PYTHONPATH`` when ``BENCH_MEMORY_PROBE`` names a folder; Python then imports this module at
start-up in every process it starts. Each one (a forked worker too: the thread is started again
after a fork, which keeps no thread) watches ``$BENCH_MEMORY_PROBE`` for ``<tag>.req`` and
writes ``<tag>.<pid>.txt``: RSS, glibc's ``mallinfo2``, CPython's arena statistics, and
gc-tracked objects by type after a collection, and the asyncio tasks by where they wait
(outermost and innermost coroutine of each task's await chain).

With ``BENCH_MEMORY_PROBE_TRIM=1`` a report whose tag has ``-after`` also runs glibc's
``malloc_trim(0)`` and reports RSS (and CPython's arenas) again: what a trim would give back.

With ``BENCH_MEMORY_PROBE_OWNERS=1`` a report whose tag has ``-after`` also lists what lives in
the sparsely used 1 MiB address windows (about CPython's arenas: an arena goes back to the
system only once every object in it is freed), gc-tracked objects and the str/int/float/bytes/
tuple objects they refer to, each with three levels of owners: the survivors that keep a
flood's arenas. (The windows are an approximation: arenas are 1 MiB but not 1 MiB aligned,
and glibc's heap shares the address space.)

With ``BENCH_MEMORY_PROBE_TRACE=<frames>`` it also runs ``tracemalloc`` (that many frames per
traceback; it slows the process down), from its first report on (not while the app imports,
which it would slow past the benchmark's start deadline), and keeps a snapshot of the highest
traced memory seen (sampled every half second): each report then adds the peak's and the
current biggest allocation sites, grouped by traceback, which tells whose objects make the peak.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import sys
import threading
import time
import tracemalloc

_DIR = os.environ.get("BENCH_MEMORY_PROBE")
_TRACE = int(os.environ.get("BENCH_MEMORY_PROBE_TRACE", "0") or 0)
_OWNERS = os.environ.get("BENCH_MEMORY_PROBE_OWNERS") == "1"
_TRIM = os.environ.get("BENCH_MEMORY_PROBE_TRIM") == "1"
"""Also measure what the allocators give back: after an ``-after`` report, ``malloc_trim(0)``
and report RSS again (it changes what the benchmark measures next: investigation only)."""
_peak: dict[str, object] = {}
"""The snapshot of the highest traced memory seen so far (``snapshot``, ``bytes``)."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in [
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        ]
    ]


def _pymalloc_stats() -> list[str]:
    """The arena lines of ``sys._debugmallocstats()`` (it writes to fd 2: read through a pipe)."""
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(write)
    chunks = []
    while chunk := os.read(read, 65536):
        chunks.append(chunk)
    os.close(read)
    keep = ("arenas allocated current", "bytes in allocated blocks", "bytes in available blocks",
            "unused pools", "arenas highwater mark")  # fmt: skip
    return [line for line in b"".join(chunks).decode().splitlines() if any(k in line for k in keep)]


def _rss_mb() -> float:
    pages = int(open(f"/proc/{os.getpid()}/statm").read().split()[1])  # noqa: SIM115
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trimmed() -> list[str]:
    """RSS before and after glibc's ``malloc_trim(0)`` (and the time it took)."""
    before = _rss_mb()
    started = time.perf_counter()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    took = time.perf_counter() - started
    return [f"trim rss_mb {before:.1f} -> {_rss_mb():.1f} in {took * 1000:.1f} ms"]


def report(tag: str = "") -> str:
    gc.collect()
    objects = gc.get_objects()
    pages = int(open(f"/proc/{os.getpid()}/statm").read().split()[1])  # noqa: SIM115
    lines = [f"pid {os.getpid()} argv {sys.argv[:3]}",
             f"rss_mb {pages * os.sysconf('SC_PAGE_SIZE') / 2**20:.1f}",
             f"gc_objects {len(objects)}"]  # fmt: skip
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        lines.append("mallinfo2_mb " + " ".join(
            f"{field[0]}={getattr(info, field[0]) / 2**20:.1f}" for field in _MallInfo2._fields_
        ))  # fmt: skip
    except (OSError, AttributeError) as exc:
        lines.append(f"mallinfo2 unavailable: {exc!r}")
    lines += [f"pymalloc {line.strip()}" for line in _pymalloc_stats()]
    by_type = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in objects)
    lines += [f"  {n:8d} {name}" for name, n in by_type.most_common(40)]
    lines += _task_census()
    if tracemalloc.is_tracing():
        lines += _traced("now", tracemalloc.take_snapshot())
        peak = _peak.get("snapshot")
        if isinstance(peak, tracemalloc.Snapshot):
            lines += _traced("peak", peak)
            _peak.clear()  # the next flood's peak is its own
    if _OWNERS and "-after" in tag:
        del objects
        lines += _sparse_owners()
    if _TRIM and "-after" in tag:
        lines += _trimmed()
        lines += [f"pymalloc-after-trim {line.strip()}" for line in _pymalloc_stats()]
    return "\n".join(lines) + "\n"


def _sparse_owners(sparse_below: int = 300, top: int = 60) -> list[str]:
    """Objects in the 1 MiB address windows holding fewer than ``sparse_below`` of them, by
    type and three levels of owners (the first referrer found; see the module)."""

    def name(o: object) -> str:
        return "-" if o is None else f"{type(o).__module__}.{type(o).__qualname__}"

    owner: dict[int, object] = {}
    windows: dict[int, dict[int, object]] = collections.defaultdict(dict)
    for o in gc.get_objects():
        windows[id(o) >> 20][id(o)] = o
        for r in gc.get_referents(o):
            owner.setdefault(id(r), o)
            if not gc.is_tracked(r) and type(r) in (str, int, float, bytes, tuple):
                windows[id(r) >> 20][id(r)] = r
    sizes = sorted(len(w) for w in windows.values())
    lines = [f"windows {len(windows)}, objects in each: " + " ".join(map(str, sizes))]
    found: collections.Counter[str] = collections.Counter()
    for window in windows.values():
        if len(window) >= sparse_below:
            continue
        for o in window.values():
            chain, at = [name(o)], o
            for _ in range(3):
                at = owner.get(id(at)) if at is not None else None
                chain.append(name(at))
            found[" <- ".join(chain)] += 1
    lines += [f"  sparse {n:6d} {chain}" for chain, n in found.most_common(top)]
    return lines


def _task_census(top: int = 25) -> list[str]:
    """Tasks of every loop by (outermost, innermost) coroutine of their await chain. Read from
    this thread while the loop runs: the task set may change under it, so it is retried."""
    import asyncio

    for _ in range(5):
        try:
            tasks = list(asyncio.tasks._all_tasks)  # type: ignore[attr-defined]
            break
        except RuntimeError:  # the set changed while it was copied
            continue
    else:
        return ["tasks unreadable"]
    where: collections.Counter[str] = collections.Counter()
    for task in tasks:
        if task.done():
            continue
        coro = outer = task.get_coro()
        while getattr(coro, "cr_await", None) is not None and hasattr(coro.cr_await, "cr_code"):
            coro = coro.cr_await
        name = getattr(getattr(outer, "cr_code", None), "co_qualname", repr(outer)[:60])
        inner = getattr(getattr(coro, "cr_code", None), "co_qualname", "?")
        where[f"{name} -> {inner}"] += 1
    lines = [f"tasks {sum(where.values())}"]
    lines += [f"  task {n:6d} {name}" for name, n in where.most_common(top)]
    return lines


def _traced(label: str, snapshot: tracemalloc.Snapshot, top: int = 25) -> list[str]:
    """The biggest allocation sites of ``snapshot``: by line, then by whole traceback."""
    snapshot = snapshot.filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
    total = sum(s.size for s in snapshot.statistics("filename"))
    lines = [f"tracemalloc {label} total_mb {total / 2**20:.1f}"]
    for stat in snapshot.statistics("lineno")[:top]:
        frame = stat.traceback[0]
        lines.append(f"  {label} line {stat.size / 2**20:7.2f} MB {stat.count:8d} "
                     f"{frame.filename}:{frame.lineno}")  # fmt: skip
    for stat in snapshot.statistics("traceback")[:top]:
        lines.append(f"  {label} traceback {stat.size / 2**20:7.2f} MB {stat.count:8d}")
        lines += [f"      {f.filename}:{f.lineno}" for f in stat.traceback]
    return lines


def _sample_peak() -> None:
    """Keep a snapshot of the highest traced memory: a new one once it grew 25 % past the
    last, from 16 MiB on (each snapshot copies every trace: costly)."""
    current, _ = tracemalloc.get_traced_memory()
    if current > 1.25 * float(_peak.get("bytes", 0)) and current > 2**24:  # type: ignore[arg-type]
        _peak["snapshot"] = tracemalloc.take_snapshot()
        _peak["bytes"] = current


def _watch(folder: str) -> None:
    """Answer each request made after this process started (an earlier one was another's)."""
    answered = {name for name in os.listdir(folder) if name.endswith(".req")}
    while True:
        time.sleep(0.5)
        if tracemalloc.is_tracing():
            _sample_peak()
        try:
            requests = [n for n in os.listdir(folder) if n.endswith(".req") and n not in answered]
        except FileNotFoundError:
            return
        for name in requests:
            answered.add(name)
            path = os.path.join(folder, f"{name[:-4]}.{os.getpid()}.txt")
            try:
                text = report(name[:-4])
            except Exception as exc:  # a probe must never take its process down
                text = f"report failed: {exc!r}\n"
            with open(path + ".tmp", "w") as out:
                out.write(text)
            os.replace(path + ".tmp", path)
            if _TRACE and not tracemalloc.is_tracing():
                tracemalloc.start(_TRACE)


def _start() -> None:
    if _DIR:
        threading.Thread(target=_watch, args=(_DIR,), daemon=True, name="memory-probe").start()


_start()
os.register_at_fork(after_in_child=_start)
