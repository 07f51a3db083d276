"""The demo deployed as Reflex deploys at scale: production mode, 2 backend worker processes
(granian) sharing nothing but a real Redis (Reflex's state manager and billing_ui's query
store), in front of the real local billing server on PostgreSQL (:mod:`billing_ui.demo.scaled`,
what ``make demo-scaled`` runs).

Two tabs of one customer (two headless chromiums, so each has its own socket) are served by
different workers, which is proven from Reflex's own record in Redis of which worker instance
holds each tab's socket, not assumed: tab B is reloaded (a new socket, same session) until it
lands on the other worker. Then a track in tab A moves tab B's meter within 1 s, with the
refresh interval at 120 s so only the live push can do it, and the billing server (behind a
recording proxy) sees each metrics fetch once, not once per worker.

"Within 1 s" is measured per track, over several tracks, in the browsers themselves: tab A
notes the time of its click, and a MutationObserver in each tab notes when its meter shows
the new value (both chromiums read the same wall clock), so selenium's polling is not counted.
The median must be within 1 s; the worst within a looser deadline (a loaded 2-CPU machine can
stall any one of them). Both are reported, with tab A's own meter (its track's answer) beside
tab B's (the push through Redis and the other worker), which shows where the time went.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from billing_ui.core import BillingClient
from billing_ui.demo.scaled import ScaledDemo, scaled_demo
from billing_ui.server.testing import RunningServer, create_customer, running_server
from billing_ui.server.testing_postgres import TempPostgres
from tests.faults import FaultProxy

from .browser import chromium, wait_for
from .demo import LOAD_HEADROOM, PAGE_TIMEOUT, go, meter_value, sign_in_at, wait_meter

CUSTOMER = "e2e_two_workers"
METRICS = "/v1/usage/metrics"
REFRESH_S = 120.0
"""Far beyond the test's length: no tab's own timer can move a meter, only the live push."""
PUSH_DEADLINE_S = 1.0
"""For the median of the tracks' latencies."""
WORST_DEADLINE_S = PUSH_DEADLINE_S * LOAD_HEADROOM
"""For the slowest track (see LOAD_HEADROOM)."""
TRACKS = 7
METER = '[data-testid="usage-meter"][data-feature-key="api_calls"] [role="progressbar"]'
READY = """
const b = document.getElementById(arguments[0]);
return Boolean(b) && !b.disabled && b.getAttribute('aria-busy') !== 'true';
"""
"""Whether the track button takes a click (the previous track answered)."""
WATCH_METER = """
const sel = arguments[0];
window.__meter = [];
let last = null;
const look = () => {
  const el = document.querySelector(sel);
  const v = el ? el.getAttribute('aria-valuenow') : null;
  if (v !== last) { last = v; window.__meter.push([Number(v), Date.now()]); }
};
new MutationObserver(look).observe(
  document.body, {subtree: true, childList: true, attributes: true, characterData: true});
look();
"""
"""Notes in ``window.__meter`` each value the api_calls meter shows, with the time it came."""
LANDING_TRIES = 15
"""Reloads of tab B to land its socket on the other worker (each lands on either; 2**-15)."""


@pytest.fixture(scope="module")
def billing(postgres_cluster: TempPostgres) -> Iterator[tuple[RunningServer, FaultProxy]]:
    db = postgres_cluster.create_database("twoworkers")
    with running_server(database_url=db) as server, FaultProxy(server.base_url) as proxy:
        create_customer(server, ["pro"], customer_id=CUSTOMER)
        with BillingClient(base_url=server.base_url, api_key=server.api_key) as client:
            client.track_usage(customer_id=CUSTOMER, feature_key="api_calls", quantity=5)
        yield server, proxy


@pytest.fixture(scope="module")
def scaled(billing: tuple[RunningServer, FaultProxy], redis_url: str) -> Iterator[ScaledDemo]:
    _server, proxy = billing
    with scaled_demo(
        billing_url=proxy.url, redis_url=redis_url, namespace=f"e2e{uuid.uuid4().hex[:8]}",
        refresh_interval=REFRESH_S, customers=[CUSTOMER],
    ) as demo:  # fmt: skip
        yield demo


def token_of(tab: WebDriver) -> str:
    token = tab.execute_script("return window.sessionStorage.getItem('token')")
    assert token, "the tab has no Reflex token"
    return str(token)


def metric_fetches(proxy: FaultProxy) -> int:
    return sum(CUSTOMER in r.query for r in proxy.seen(METRICS))


def landed(demo: ScaledDemo, tab: WebDriver) -> Callable[[], str | None]:
    """Which worker holds the tab's socket (for a wait: None until it has one)."""
    return lambda: demo.instance_of(token_of(tab))


def shown_at(tab: WebDriver, value: float) -> float | None:
    """When (ms, wall clock) the tab's meter first showed ``value`` (None: not yet)."""
    seen = tab.execute_script("return window.__meter || []")
    return next((float(at) for v, at in seen if v == value), None)


def seen_by_both(
    tab_a: WebDriver, tab_b: WebDriver, demo: ScaledDemo, proxy: FaultProxy, n: int
) -> str:
    """For a failed wait on track ``n``: what each tab's meter showed (``window.__meter``:
    value, ms since the first), which worker holds each socket, the metrics fetches the billing
    server saw, and the workers' last log lines (a lost click, a lost push and a push dropped as
    stale look alike from tab B alone)."""
    parts = [f"track n={n} (meter {5 + n} expected), metrics fetches {metric_fetches(proxy)}"]
    for name, tab in (("A", tab_a), ("B", tab_b)):
        try:
            seen = tab.execute_script("return window.__meter || []")
            first = seen[0][1] if seen else 0
            shown = [(v, int(at - first)) for v, at in seen]
            parts.append(f"tab {name} on {demo.instance_of(token_of(tab))} showed {shown}")
        except Exception as exc:  # the report must not hide the failure it explains
            parts.append(f"tab {name}: {type(exc).__name__}")
    try:
        log = demo.log_path.read_text(errors="replace").splitlines()
        parts.append("workers' log tail:\n" + "\n".join(log[-40:]))
    except OSError as exc:
        parts.append(f"no workers' log: {exc}")
    return "; ".join(parts)


def test_a_track_on_one_worker_moves_the_meter_on_the_other_within_a_second(
    scaled: ScaledDemo, billing: tuple[RunningServer, FaultProxy]
) -> None:
    _server, proxy = billing
    with chromium() as tab_a, chromium() as tab_b:
        sign_in_at(tab_a, scaled.frontend_url, CUSTOMER)
        go(tab_a, "playground")
        wait_meter(tab_a, "api_calls", 5, timeout=PAGE_TIMEOUT)
        worker_a = wait_for(landed(scaled, tab_a), timeout=PAGE_TIMEOUT)

        sign_in_at(tab_b, scaled.frontend_url, CUSTOMER)
        wait_meter(tab_b, "api_calls", 5, timeout=PAGE_TIMEOUT)
        token_b = token_of(tab_b)
        worker_b = wait_for(landed(scaled, tab_b), timeout=PAGE_TIMEOUT)
        for _ in range(LANDING_TRIES):
            if worker_b != worker_a:
                break
            old = scaled.socket_of(token_b)
            tab_b.refresh()  # a new socket for the same tab (its token stays)
            new = wait_for(
                lambda old=old: (record := scaled.socket_of(token_b)) != old and record,
                timeout=PAGE_TIMEOUT,
            )
            worker_b = new[0]
            wait_meter(tab_b, "api_calls", 5, timeout=PAGE_TIMEOUT)
        assert token_of(tab_b) == token_b
        assert worker_a == scaled.instance_of(token_of(tab_a))
        assert worker_b != worker_a, f"tab B stayed on worker {worker_a} for {LANDING_TRIES} loads"

        # Both tabs' first loads, on two workers, made one metrics request between them.
        assert metric_fetches(proxy) == 1

        for tab in (tab_a, tab_b):
            tab.execute_script(WATCH_METER, METER)
        own: list[float] = []  # click -> tab A's meter (the track's answer, on worker A)
        pushed: list[float] = []  # click -> tab B's meter (the push, through worker B)
        for n in range(1, TRACKS + 1):
            wait_for(lambda: tab_a.execute_script(READY, "track-api_calls"), timeout=PAGE_TIMEOUT)
            clicked = float(
                tab_a.execute_script(
                    "const t = Date.now(); document.getElementById(arguments[0]).click();"
                    " return t;",
                    "track-api_calls",
                )
            )
            told = lambda n=n: seen_by_both(tab_a, tab_b, scaled, proxy, n)  # noqa: E731
            shown_b = wait_for(
                lambda n=n: shown_at(tab_b, 5 + n), timeout=10 * LOAD_HEADROOM, message=told
            )
            shown_a = wait_for(
                lambda n=n: shown_at(tab_a, 5 + n), timeout=10 * LOAD_HEADROOM, message=told
            )
            pushed.append((shown_b - clicked) / 1000)
            own.append((shown_a - clicked) / 1000)
            if n == 1:
                # The track's refetch is made once (by tab A's worker); tab B's worker only
                # read Redis.
                proxy.wait_for(lambda _seen: metric_fetches(proxy) >= 2, timeout=10)
                assert metric_fetches(proxy) == 2
        median, worst = statistics.median(pushed), max(pushed)
        report = (
            f"click -> tab B's meter over {TRACKS} tracks: median {median:.3f} s, worst "
            f"{worst:.3f} s ({', '.join(f'{x:.3f}' for x in pushed)}); click -> tab A's own "
            f"meter: median {statistics.median(own):.3f} s, worst {max(own):.3f} s"
        )
        print(report)  # pytest -s shows it; the assertions below carry it too
        assert median <= PUSH_DEADLINE_S, report
        assert worst <= WORST_DEADLINE_S, report
        assert meter_value(tab_b, "api_calls") == 5 + TRACKS
