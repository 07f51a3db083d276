"""Benchmark: many browser sockets tracking at once against the demo's Reflex backend.

    python -m bench.many_sockets [--smoke] [--json PATH]

The billing server (``python -m billing_ui.server``) and the demo's Reflex backend (``reflex
run --backend-only``) each run in their own process; this process plays the browsers with raw
socket.io clients (``bench/_socketio.py``). N tabs sign in as one customer with an unlimited
quota, opens the playground page (whose ``on_load`` starts ``UsageMetricsState.poll``: the
metrics loop runs for each tab as it does in a browser, every ``POLL_INTERVAL_S``) and sends M
``TrackUsageState.track`` events as fast as the socket takes them, while a bystander tab
(another customer) hydrates again and again. The demo tracks through its durable outbox.

Reported: tracks acknowledged to their tab (``tracked_count``) and counted by the billing
server, both against the tracks sent (goal: every one, exactly once); the bystander's hydrate
p99 during the flood against its p99 before it, and failed hydrates (no answer in 10 s); the
backend's RSS after the flood (tabs closed) against before it (before its tabs opened), with
the steps between as raw figures (just started, the flood's tabs open and hydrated, the flood
over with its tabs still open); the polling loops seen running
(``billing_ui_polling_tabs`` scraped from the backend's ``/metrics``) during the flood and
after the tabs closed, the closed tabs' states the backend still keeps in memory once
``release_closed_tabs`` has swept them (``billing_ui_tab_states``, goal 0, and how long after
the tabs closed: ``tab_states_released_s``), the tabs whose meter ended on the server's total,
and the outbox's depth at the end. The flood runs on two fresh backends: first with
``BILLING_UI_BATCH_TRACKS=0`` (every track its own request, behind the client's bounded pool),
then as shipped (concurrent tracks leave as batch requests, ``billing_ui.core.batching``);
``batched_vs_unbatched_acked`` is the gain. The shipped backend then takes a second flood of
the same size (``acked_second``, ``rss_after_second_mb``): a backend that survived one flood
used to acknowledge 107-571 of 4,000 the second time. A third fresh backend then takes the
same tabs, signed in and polling, opened and closed with no track (``tabs_only_rss_*``, no
goal): how much of the RSS after a flood the tabs leave by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench._harness import Goal, cli, judged
from bench._reflex_backend import ReflexBackend, reflex_backend
from bench._socketio import Tab, handler_name
from billing_ui.core.queries import ENV_BATCH_TRACKS as ENV_BATCH
from billing_ui.server.testing import ServerProcess, server_process

FLOOD_CUSTOMER = "demo_enterprise"  # unlimited api_calls in the sample plans
BYSTANDER = "demo_pro"
HYDRATE_FAILED_AFTER_S = 10.0
HYDRATE_EVERY_S = 0.05
IDLE_HYDRATES = 20
QUIET_S = 15.0
"""A flooding tab that hears nothing for this long has heard every answer it will get."""
RELEASED = "billing_ui_tab_states_released_total"
TAB_STATES_GONE_S = 60.0
"""Deadline for the closed tabs' states to leave the backend's memory (a sweep every 5 s drops
those idle for 10 s: billing_ui/server_memory.py)."""
POLL_INTERVAL_S = 5.0
"""Each flooding tab's metrics loop ticks this often (the demo's default is 30 s; shorter
makes every tab poll several times during the flood)."""
POLLING_PAGE = "/playground"
METRICS_PATH = "/metrics"
BACKEND_ENV = {
    "BILLING_UI_DEMO_CUSTOMERS": f"{FLOOD_CUSTOMER},{BYSTANDER}",
    "BILLING_UI_REFRESH_INTERVAL": "30",
    "BILLING_UI_METRICS_PATH": METRICS_PATH,
}
POLLING_ENV = {**BACKEND_ENV, "BILLING_UI_REFRESH_INTERVAL": str(POLL_INTERVAL_S)}
"""The backend of a flood whose tabs poll (this benchmark's)."""


def _names() -> tuple[str, str, Any, Any]:
    """Wire names of the handlers and the states whose vars are read (imported lazily: this
    pulls in Reflex and the demo)."""
    from billing_ui.demo.session import DemoSessionState
    from billing_ui.states import TrackUsageState

    return (
        handler_name(DemoSessionState.sign_in),
        handler_name(TrackUsageState.track),
        DemoSessionState,
        TrackUsageState,
    )


async def signed_in_tab(url: str, customer: str) -> Tab:
    sign_in, _, session_state, _ = _names()
    tab = Tab(url)
    await tab.__aenter__()
    await tab.hydrate()
    await tab.emit(sign_in, {"customer_id": customer})
    await tab.wait_for(lambda: tab.state(session_state).get("signed_in_as") == customer, 30)
    return tab


def progress(started: float, what: str) -> None:
    """One line on stderr per phase of a flood (a full run takes minutes on a loaded machine)."""
    print(f"[many_sockets] {time.monotonic() - started:7.1f} s  {what}", file=sys.stderr)


@functools.cache
def _http() -> httpx.Client:
    """One client for the polls below (thread-safe): httpx builds a TLS context for each new
    client, about 30 ms of CPU, and the gauge is polled every quarter second."""
    return httpx.Client(timeout=30)


def backend_gauge(backend_url: str, name: str) -> float:
    """One unlabelled sample of the backend's Prometheus metrics (``BILLING_UI_METRICS_PATH``)."""
    text = _http().get(backend_url + METRICS_PATH).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.split("{")[0].split(" ")[0] == name
    )


async def polling_gauge(url: str) -> float:
    return await asyncio.to_thread(backend_gauge, url, "billing_ui_polling_tabs")


async def wait_polling(url: str, want: float, timeout: float) -> float:
    """Wait (deadline ``timeout``) until the backend counts ``want`` running metrics loops;
    the count last seen."""
    return await wait_gauge(url, "billing_ui_polling_tabs", want, timeout)


async def wait_released(url: str, released: float, timeout: float, keeps: float = 0) -> float:
    """Wait (deadline ``timeout``) until the backend has dropped ``released`` tabs' states from
    its memory in all and keeps ``keeps`` (its last sweep's figures); the states it keeps, last
    seen. (The count alone is not enough: it was read before the flood, and an earlier tab's
    states may have been dropped since; the gauge alone may be from before the tabs closed.)"""
    deadline = time.monotonic() + timeout
    while True:
        done = await asyncio.to_thread(backend_gauge, url, RELEASED)
        kept = await asyncio.to_thread(backend_gauge, url, "billing_ui_tab_states")
        if (done >= released and kept == keeps) or time.monotonic() > deadline:
            return kept
        await asyncio.sleep(0.25)


async def wait_gauge(url: str, name: str, want: float, timeout: float) -> float:
    """Wait (deadline ``timeout``) until the backend's gauge ``name`` reads ``want``; the value
    last seen."""
    deadline = time.monotonic() + timeout
    while (seen := await asyncio.to_thread(backend_gauge, url, name)) != want:
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.25)
    return seen


def meter_consumed(tab: Tab, feature: str = "api_calls") -> float | None:
    """The ``consumed`` of ``feature``'s meter as this tab last heard it (None: no meter)."""
    return next((float(m["consumed"]) for m in tab.meters() if m["feature_key"] == feature), None)


def consumed(base_url: str, api_key: str, customer: str) -> float:
    response = _http().get(
        f"{base_url}/v1/usage/metrics",
        params={"customer_id": customer, "feature_key": "api_calls"},
        headers={"Authorization": f"Bearer {api_key}"},
    )
    response.raise_for_status()
    metrics = response.json()["metrics"]
    return float(next(m["consumed"] for m in metrics if m["feature_key"] == "api_calls"))


class Acks:
    """The successful tracks one tab was told about. Each success sends a ``last_result`` with
    the event's ``recorded_at`` and the usage after it (unique per event for one customer);
    later deltas repeat the last one, hence a set. ``is_success`` is merged as the browser
    merges it: a delta carries only the vars that changed, so a success after a success does
    not repeat it. Reads only the updates that are new since the last count, so the load
    generator spends little of the shared CPUs on it."""

    def __init__(self, tab: Tab, track_state: Any) -> None:
        self.tab = tab
        self.key = track_state.get_full_name()
        self.seen: set[tuple[str, float]] = set()
        self.read = 0
        self.success = False

    def count(self) -> int:
        updates = self.tab.updates
        for update in updates[self.read :]:
            delta = (update.get("delta") or {}).get(self.key) or {}
            self.success = delta.get("is_success_rx_state_", self.success)
            last = delta.get("last_result_rx_state_")
            if last and last.get("feature_key") and self.success:
                self.seen.add((last["recorded_at"], last["consumed"]))
        self.read = len(updates)
        return len(self.seen)


async def hydrate_loop(tab: Tab, stop: asyncio.Event, samples: list[float]) -> int:
    """Hydrate until ``stop``; latencies (s) into ``samples``; returns failed hydrates."""
    failed = 0
    while not stop.is_set():
        try:
            samples.append(await tab.hydrate(timeout=HYDRATE_FAILED_AFTER_S))
        except TimeoutError:
            failed += 1
        await asyncio.sleep(HYDRATE_EVERY_S)
    return failed


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def polling_tab(url: str, customer: str) -> Tab:
    """A signed-in tab on the playground page: its metrics loop runs from now on."""
    tab = await signed_in_tab(url, customer)
    await tab.navigate(POLLING_PAGE)
    return tab


async def sample_gauge(url: str, stop: asyncio.Event, samples: list[float]) -> None:
    while not stop.is_set():
        samples.append(await polling_gauge(url))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL_INTERVAL_S)


async def flood(
    url: str,
    tabs: int,
    tracks: int,
    ack_timeout: float,
    *,
    poll: bool = True,
    server: ServerProcess | None = None,
    phase: Callable[[str], float] | None = None,
    released_within: float | None = None,
) -> dict[str, Any]:
    """``tabs`` tabs each send ``tracks`` tracks (their metrics loops running when ``poll``)
    while a bystander hydrates. With ``server``, waits (deadline ``ack_timeout``) for every
    tab's meter to show the server's total before the tabs close. ``phase(tag)``: called
    (in a thread) once the tabs are open and once the flood is over, tabs still open; what
    it returns (the backend's RSS) goes into the result under ``phase_<tag>``. With
    ``released_within``, waits (that deadline) for the closed tabs' states to leave the
    backend's memory (``tab_states_after``: the tabs' states it still keeps)."""
    _, track, _, track_state = _names()
    released_before = await asyncio.to_thread(backend_gauge, url, RELEASED)
    bystander = await signed_in_tab(url, BYSTANDER)
    idle: list[float] = []
    for _ in range(IDLE_HYDRATES):
        idle.append(await bystander.hydrate())
    opened = polling_tab if poll else signed_in_tab
    began = time.monotonic()
    flooders = await asyncio.gather(*(opened(url, FLOOD_CUSTOMER) for _ in range(tabs)))
    polling_at_start = await wait_polling(url, tabs, 60) if poll else 0.0
    progress(began, f"{tabs} tabs signed in, {polling_at_start:.0f} loops polling")
    phases: dict[str, float] = {}
    if phase is not None:
        phases["phase_tabs_open"] = await asyncio.to_thread(phase, "tabs_open")
    stop = asyncio.Event()
    during: list[float] = []
    gauge: list[float] = []
    watcher = asyncio.create_task(hydrate_loop(bystander, stop, during))
    sampler = asyncio.create_task(sample_gauge(url, stop, gauge)) if poll else None
    started = time.monotonic()

    async def send_all(tab: Tab) -> int:
        acks = Acks(tab, track_state)
        for _ in range(tracks):
            await tab.emit(track, {"feature_key": "api_calls", "quantity": 1})
        deadline = time.monotonic() + ack_timeout
        while time.monotonic() < deadline:  # all acknowledged, or the tab hears nothing more
            heard = len(tab.updates)
            with contextlib.suppress(TimeoutError):
                await tab.wait_for(lambda: acks.count() == tracks, QUIET_S)
                break
            if len(tab.updates) == heard:
                break  # refused or lost: nothing more will come
        return acks.count()

    acked = await asyncio.gather(*(send_all(tab) for tab in flooders))
    seconds = time.monotonic() - started
    progress(began, f"flood over: {sum(acked)} of {tabs * tracks} acknowledged")
    converged = 0
    if server is not None:  # every tab's meter on the server's total (the polls and pushes)
        converged = await meters_on_total(server, flooders, ack_timeout)
        progress(began, f"{converged} of {tabs} meters on the server's total")
    stop.set()
    failed_hydrates = await watcher
    if sampler is not None:
        await sampler
    metric_updates = sum(_metric_updates(tab) for tab in flooders)
    if phase is not None:
        phases["phase_flood_over"] = await asyncio.to_thread(phase, "flood_over")
    # All at once: one after the other, each close handshake waited for a saturated backend
    # (201 closes took 340 s after the unbatched flood at load ~15).
    await asyncio.gather(*(tab.close() for tab in [*flooders, bystander]))
    # A loop ends at its next tick after its tab closed (states/metrics.py).
    polling_after = await wait_polling(url, 0, 2 * POLL_INTERVAL_S + 30) if poll else 0.0
    progress(began, f"tabs closed, {polling_after:.0f} loops left")
    # Their states leave the backend's memory once on disk and idle (server_memory.py): each
    # tab's dropped (the counter; the gauge is as of the last sweep, maybe before the close).
    tab_states_after = released_s = float("nan")  # not waited for
    if released_within is not None:
        closed = time.monotonic()
        want = released_before + tabs + 1  # the flooders' and the bystander's
        tab_states_after = await wait_released(url, want, released_within)
        released_s = time.monotonic() - closed
        kept = f"{tab_states_after:.0f} tabs' states kept in memory"
        progress(began, f"{kept} {released_s:.1f} s after their loops ended")
    return {
        "acked": sum(acked),
        "seconds": seconds,
        "idle": idle,
        "during": during,
        "failed_hydrates": failed_hydrates,
        "polling_at_start": polling_at_start,
        "polling_min": min(gauge, default=0.0),
        "polling_after": polling_after,
        "tab_states_after": tab_states_after,
        "tab_states_released_s": released_s,
        "converged": converged,
        "metric_updates": metric_updates,
        **phases,
    }


async def meters_on_total(server: ServerProcess, tabs: list[Tab], timeout: float) -> int:
    """How many of ``tabs`` show the server's total on their meter, waited for (deadline
    ``timeout``). The total is read again each second: tracks the backend was still working
    through when the flood's window closed keep landing, and the tabs follow them."""
    deadline = time.monotonic() + timeout
    while True:
        total = await asyncio.to_thread(consumed, server.base_url, server.api_key, FLOOD_CUSTOMER)
        on_total = sum(meter_consumed(tab) == total for tab in tabs)
        if on_total == len(tabs) or time.monotonic() > deadline:
            return on_total
        await asyncio.sleep(1.0)


def _metric_updates(tab: Tab) -> int:
    """Updates to this tab that carried its meters (its loop's ticks, live pushes)."""
    return tab.meter_updates()


PROBE_ENV = "BENCH_MEMORY_PROBE"
"""A folder: the backend's memory is reported there before and after each flood and at the
steps between (tabs open, flood over; see
``bench/_memory_probe/sitecustomize.py``; investigation only, off by default)."""


def probe_env() -> dict[str, str]:
    """What the backend needs for the memory probe (nothing unless ``BENCH_MEMORY_PROBE``)."""
    if not os.environ.get(PROBE_ENV):
        return {}
    from billing_ui.demo.reflex_process import REPO

    probe = Path(__file__).with_name("_memory_probe")
    path = [str(REPO), str(probe), os.environ.get("PYTHONPATH", "")]
    return {"PYTHONPATH": os.pathsep.join(path)}


def probe(backend: ReflexBackend, tag: str, timeout: float = 120.0) -> None:
    """Ask the backend's listening process for a memory report (``BENCH_MEMORY_PROBE``) and
    wait for it (deadline ``timeout``)."""
    folder = os.environ.get(PROBE_ENV)
    if not folder:
        return
    (Path(folder) / f"{tag}.req").touch()
    report = Path(folder) / f"{tag}.{backend.process.pid}.txt"
    deadline = time.monotonic() + timeout
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.25)
    print(f"[many_sockets] memory report {report}: {report.exists()}", file=sys.stderr)


def measure(
    srv: ServerProcess,
    tabs: int,
    tracks: int,
    ack_timeout: float,
    *,
    batch: bool,
    warm: bool,
    floods: int = 1,
    arm: str = "",
) -> list[dict[str, Any]]:
    """``floods`` floods, one after the other, against one fresh backend; tracks batched or
    not. Each flood's result has the backend's RSS before and after it. ``arm``: the memory
    probe's tag for this backend (by default ``batched`` or ``unbatched``)."""
    with (
        tempfile.TemporaryDirectory() as tmp,
        reflex_backend(
            {
                **POLLING_ENV,
                "BILLINGOS_API_URL": srv.base_url,
                ENV_BATCH: "1" if batch else "0",
                **probe_env(),
            },
            Path(tmp) / "backend.log",
        ) as backend,
    ):
        rss_idle = backend.rss_mb()  # started, no tab yet
        if warm:  # first compile of every state, first connection: one tab, one track
            asyncio.run(flood(backend.url, 1, 1, 60))
        outs = []
        arm = arm or ("batched" if batch else "unbatched")
        for n in range(1, floods + 1):
            rss_before = backend.rss_mb()
            probe(backend, f"{arm}-before{n}")
            counted_before = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER)
            cpu_before, load_before = backend.cpu_s(), os.getloadavg()[0]

            def phase(tag: str, n: int = n) -> float:
                rss = backend.rss_mb()
                probe(backend, f"{arm}-{tag}{n}")
                return rss

            out = asyncio.run(
                flood(
                    backend.url,
                    tabs,
                    tracks,
                    ack_timeout,
                    server=srv,
                    phase=phase,
                    released_within=TAB_STATES_GONE_S,
                )
            )
            out["cpu_s"], out["load"] = (
                backend.cpu_s() - cpu_before,
                (load_before + os.getloadavg()[0]) / 2,
            )
            out["counted"] = consumed(srv.base_url, srv.api_key, FLOOD_CUSTOMER) - counted_before
            out["rss_idle"] = rss_idle
            out["rss_before"], out["rss_after"] = rss_before, backend.rss_mb()
            probe(backend, f"{arm}-after{n}")
            out["outbox_depth"] = backend_gauge(backend.url, "billing_ui_outbox_depth")
            outs.append(out)
    return outs


def rss_figures(out: dict[str, Any]) -> dict[str, float]:
    """The backend's memory (RSS, MB) before and after a flood (tabs closed), and after ÷
    before; and, where the run recorded them (many_sockets does, socket_flood does not), the
    steps between: just started (``idle``, before the warm-up tab), the flood's tabs open and
    hydrated, the flood over with its tabs still open."""
    figures = {
        "rss_before_mb": round(out["rss_before"], 1),
        "rss_after_mb": round(out["rss_after"], 1),
        "rss_after_vs_before": round(out["rss_after"] / out["rss_before"], 3),
    }
    if {"rss_idle", "phase_tabs_open", "phase_flood_over"} <= out.keys():
        figures |= {
            "rss_idle_mb": round(out["rss_idle"], 1),
            "rss_tabs_open_mb": round(out["phase_tabs_open"], 1),
            "rss_flood_over_mb": round(out["phase_flood_over"], 1),
            # No goal: the flood's tracks alone, against the backend with its 200 tabs open
            # and hydrated (the goal's baseline stays the backend before the tabs opened).
            "rss_after_vs_tabs_open": round(out["rss_after"] / out["phase_tabs_open"], 3),
        }
    return figures


def run(*, smoke: bool = False) -> dict[str, object]:
    tabs, tracks = (2, 2) if smoke else (200, 20)
    ack_timeout = 60.0 if smoke else 300.0
    with tempfile.TemporaryDirectory() as tmp, server_process(db_path=Path(tmp) / "b.db") as srv:
        (unbatched,) = measure(srv, tabs, tracks, ack_timeout, batch=False, warm=not smoke)
        out, second = measure(srv, tabs, tracks, ack_timeout, batch=True, warm=not smoke, floods=2)
        # The same tabs, opened and closed with no track: what the tabs alone leave.
        (tabs_only,) = measure(srv, tabs, 0, ack_timeout, batch=True, warm=not smoke, arm="tabs")
    sent = tabs * tracks
    figures: dict[str, float] = {
        "tracks_sent": sent,
        "tracks_acked": out["acked"],
        "tracks_counted": out["counted"],
        "acked_vs_sent": round(out["acked"] / sent, 4),
        "counted_vs_acked": round(out["counted"] / out["acked"], 4) if out["acked"] else 0.0,
        "flood_s": round(out["seconds"], 2),
        "acked_per_s": round(out["acked"] / out["seconds"], 1),
        "unbatched_tracks_acked": unbatched["acked"],
        "unbatched_tracks_counted": unbatched["counted"],
        "unbatched_flood_s": round(unbatched["seconds"], 2),
        "unbatched_acked_per_s": round(unbatched["acked"] / unbatched["seconds"], 1),
        "batched_vs_unbatched_acked": round(out["acked"] / max(unbatched["acked"], 1), 2),
        "bystander_hydrates": len(out["during"]),
        "bystander_failed_hydrates": out["failed_hydrates"],
        "bystander_idle_p99_ms": round(p99(out["idle"]) * 1000, 1),
        "bystander_flood_p50_ms": round(statistics.median(out["during"] or [0]) * 1000, 1),
        "bystander_flood_p99_ms": round(p99(out["during"]) * 1000, 1),
        "bystander_p99_vs_idle": round(p99(out["during"]) / max(p99(out["idle"]), 1e-6), 2),
        "backend_cpu_ms_per_track": round(out["cpu_s"] / sent * 1000, 3),
        "unbatched_backend_cpu_ms_per_track": round(unbatched["cpu_s"] / sent * 1000, 3),
        "backend_cpu_share_of_one_core": round(out["cpu_s"] / out["seconds"], 3),
        "load_average": round(out["load"], 1),
        **rss_figures(out),
        "polling_tabs_at_start": out["polling_at_start"],
        "polling_tabs_min_during": out["polling_min"],
        "polling_tabs_after_close": out["polling_after"],
        "tab_states_after_close": out["tab_states_after"],
        "tab_states_released_s": round(out["tab_states_released_s"], 1),
        "tabs_meter_on_server_total": out["converged"],
        "meter_updates_per_tab": round(out["metric_updates"] / tabs, 1),
        "outbox_depth_after": out["outbox_depth"],
        "acked_first": out["acked"],
        "acked_second": second["acked"],
        "counted_second": second["counted"],
        "second_acked_vs_sent": round(second["acked"] / sent, 4),
        "second_flood_s": round(second["seconds"], 2),
        "second_failed_hydrates": second["failed_hydrates"],
        "second_tabs_meter_on_server_total": second["converged"],
        "load_average_second": round(second["load"], 1),
        "rss_after_first_mb": round(out["rss_after"], 1),
        "rss_after_second_mb": round(second["rss_after"], 1),
        "rss_after_second_vs_before": round(second["rss_after"] / out["rss_before"], 3),
        # No goal: the flood's tabs on a fresh backend, opened (signed in, polling) and closed
        # without one track: the part of rss_after_vs_before that no track causes.
        "tabs_only_rss_before_mb": round(tabs_only["rss_before"], 1),
        "tabs_only_rss_tabs_open_mb": round(tabs_only["phase_tabs_open"], 1),
        "tabs_only_rss_after_mb": round(tabs_only["rss_after"], 1),
        "tabs_only_rss_after_vs_before": round(tabs_only["rss_after"] / tabs_only["rss_before"], 3),
    }
    goals = {
        "acked_vs_sent": Goal("1.0: every track acknowledged", lambda v: v == 1.0),
        "counted_vs_acked": Goal("1.0: every acknowledged track counted once", lambda v: v == 1.0),
        "bystander_failed_hydrates": Goal("0", lambda v: v == 0),
        "bystander_flood_p99_ms": Goal("< 1000 ms", lambda v: v < 1000),
        "rss_after_vs_before": Goal("<= 1.2", lambda v: v <= 1.2),
        "polling_tabs_min_during": Goal(
            "every flooding tab's metrics loop running throughout", lambda v: v == tabs
        ),
        "polling_tabs_after_close": Goal("0: every loop ended with its tab", lambda v: v == 0),
        "tab_states_after_close": Goal(
            "0: every closed tab's states out of memory (on disk)", lambda v: v == 0
        ),
        "tabs_meter_on_server_total": Goal(
            "every tab's meter ends on the server's total", lambda v: v == tabs
        ),
        "outbox_depth_after": Goal("0: nothing left queued", lambda v: v == 0),
        "second_acked_vs_sent": Goal(
            "1.0: a second flood on the same backend acknowledged whole", lambda v: v == 1.0
        ),
        "rss_after_second_vs_before": Goal("<= 1.2", lambda v: v <= 1.2),
    }
    config = {
        "tabs": tabs,
        "tracks_per_tab": tracks,
        "poll_interval_s": POLL_INTERVAL_S,
        "cpus": os.cpu_count(),
    }
    return judged("many_sockets", config, figures, goals)


if __name__ == "__main__":
    cli(run)
