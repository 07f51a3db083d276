"""The demo app's Reflex backend as its own process (``reflex run --backend-only``), pointed at
a billing server, for load that must not share a process with the load generator.

Its own process so that its memory (RSS) is its own, and so that hundreds of sockets hit the
real server stack (uvicorn, socket.io, the state manager), not an in-process shortcut. No
frontend is built: raw socket.io clients (``bench/_socketio.py``) play the tabs.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil  # type: ignore[import-untyped]  # no stubs installed; bench only

from billing_ui.demo.reflex_process import reflex_run

START_TIMEOUT_S = 90.0


@dataclass
class ReflexBackend:
    url: str
    process: psutil.Process
    """The process that listens (a child of ``reflex run``): whose memory is measured."""
    root: psutil.Process
    """``reflex run`` itself: with its descendants, every process of the backend."""

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the backend."""
        total = 0.0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def rss_mb(self) -> float:
        return float(self.process.memory_info().rss) / 2**20

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the listening process has used so far: on a shared
        machine the ratio that carries over, where wall time does not."""
        times = self.process.cpu_times()
        return float(times.user + times.system)


def _listener(root: psutil.Process, port: int) -> psutil.Process | None:
    for proc in [root, *root.children(recursive=True)]:
        try:
            if any(
                c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                for c in proc.net_connections(kind="tcp")
            ):
                return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@contextmanager
def reflex_backend(env: Mapping[str, str], log_path: Path) -> Iterator[ReflexBackend]:
    """Run the demo's backend with ``env`` added until the block ends (process group killed).
    Waits for ``/ping`` with a deadline; the backend's output goes to ``log_path``.

    Its states folder (``REFLEX_STATES_WORKDIR``) is its own, beside ``log_path``, unless
    ``env`` names one: ``reflex run`` deletes the folder when it starts, and two backends
    sharing the app directory's ``.states`` raced (one deleted a pickle the other was reading:
    FileNotFoundError). With no folder shared, backends of several benchmarks can start at
    once (``python -m bench --smoke`` runs them in parallel lanes)."""
    args = ["--backend-only", "--env", "prod"]
    states = log_path.with_name(f"{log_path.stem}-states")
    env = {"REFLEX_STATES_WORKDIR": str(states), **env}
    with reflex_run(args, env, log_path, stop_timeout_s=20) as (proc, port):
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        listener = None
        with httpx.Client(timeout=1) as http:  # one client: each new one costs ~30 ms of CPU
            while listener is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = log_path.read_text()
                    raise RuntimeError(f"the Reflex backend did not start:\n{log}")
                try:
                    if http.get(url + "/ping").status_code == 200:
                        listener = _listener(psutil.Process(proc.pid), port)
                except httpx.HTTPError:
                    pass
                if listener is None:
                    time.sleep(0.2)
        yield ReflexBackend(url=url, process=listener, root=psutil.Process(proc.pid))


def start_backends(
    stack: contextlib.ExitStack, envs: Sequence[Mapping[str, str]], log_dir: Path
) -> list[ReflexBackend]:
    """Start one backend per ``envs``, all at once (each with a states folder of its own, see
    :func:`reflex_backend`), each stopped when ``stack`` closes."""
    managers = [
        reflex_backend(env, log_dir / f"backend{i}.log") for i, env in enumerate(envs, start=1)
    ]
    with ThreadPoolExecutor(max_workers=len(managers)) as pool:
        futures = [pool.submit(manager.__enter__) for manager in managers]
    started, failed = [], None
    for manager, future in zip(managers, futures, strict=True):
        try:
            started.append(future.result())
        except Exception as exc:  # the started ones still stop with the stack
            failed = failed or exc
            continue
        stack.push(manager.__exit__)
    if failed is not None:
        raise failed
    return started
