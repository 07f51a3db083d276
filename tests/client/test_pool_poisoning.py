"""A burst of cancelled calls during an outage must not poison the async client's pool.

httpcore 1.0.9 (encode/httpcore#1093): a request cancelled while it waits for a pool slot can
leave a connection stuck in CONNECTING forever. Reproduced here the way production meets it:
the real server process frozen with SIGSTOP (a real outage: the kernel accepts, nothing
answers), tracks started at 200 per second, some cancelled the way Reflex cancels the tasks of
a closing tab, then SIGCONT. A pool of 2 and 0.5 s timeouts keep each round to ~4 s; a round
poisoned today's pool in most runs, four rounds in every run measured (4 of 4 runs failed).

The server-down / pool-exhausted distinction is checked against the real server too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections import Counter

import httpx
import pytest

from billing_ui.core import (
    APIConnectionError,
    APITimeoutError,
    AsyncBillingClient,
    PoolExhaustedError,
)
from billing_ui.core._transport import gate_for
from billing_ui.core.problems import classify
from billing_ui.server.testing import ServerProcess, server_process

POOL = 2
TIMEOUT_S = 0.5
ROUNDS = 4
STALL_S = 3.0
RATE_PER_S = 200
CANCEL_PROBABILITY = 0.5
CUSTOMER, FEATURE = "demo_pro", "api_calls"  # seeded by the server process


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory):
    with server_process(db_path=tmp_path_factory.mktemp("pool") / "billing.db") as srv:
        yield srv


def small_client(srv: ServerProcess, **kwargs) -> AsyncBillingClient:
    http = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=POOL, max_keepalive_connections=POOL)
    )
    options = {"timeout": httpx.Timeout(TIMEOUT_S), "max_retries": 1} | kwargs
    return AsyncBillingClient(
        base_url=srv.base_url,
        http_client=http,
        retry_initial_delay=0.05,
        retry_max_delay=0.2,
        **options,
    )


def stuck_connections(http: httpx.AsyncClient) -> list[str]:
    """Connections that are not idle although no request is in the pool: they can never be
    used again (the signature of httpcore#1093 is ``CONNECTING``)."""
    pool = http._transport._pool  # type: ignore[attr-defined]
    return [repr(c) for c in pool.connections if not c.is_idle()] + [
        f"leftover request {r.request.url}" for r in pool._requests
    ]


async def settled(http: httpx.AsyncClient, within_s: float = 2.0) -> bool:
    """Whether the pool is left with no stuck connection. A connection whose cancelled request
    is still being cleaned up (httpcore closes it in a shielded step) may need a few loop turns
    after the task ended; a stuck one never clears."""
    deadline = time.monotonic() + within_s
    while stuck_connections(http):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def flood_during_outage(srv: ServerProcess, client: AsyncBillingClient) -> Counter[str]:
    """One outage: tracks at RATE_PER_S for STALL_S while the server is frozen, a random
    pending one cancelled now and then; then the server resumes and every task ends."""
    rng = random.Random(1093)
    tasks: list[asyncio.Task[object]] = []
    srv.pause()
    try:
        started = time.monotonic()
        while time.monotonic() - started < STALL_S:
            tasks.append(
                asyncio.create_task(
                    client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
                )
            )
            pending = [t for t in tasks if not t.done()]
            if pending and rng.random() < CANCEL_PROBABILITY:
                rng.choice(pending).cancel()
            await asyncio.sleep(1 / RATE_PER_S)
    finally:
        srv.resume()
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    return Counter(type(o).__name__ for o in outcomes)


async def test_a_burst_of_cancellations_during_an_outage_leaves_the_pool_usable(process):
    client = small_client(process)
    http = client._http
    try:
        await client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
        for _ in range(ROUNDS):
            outcomes = await flood_during_outage(process, client)
            # the hazard really happened: calls were cancelled while others waited or timed out
            timed_out = outcomes["APITimeoutError"] + outcomes["PoolExhaustedError"]
            assert outcomes["CancelledError"] > 0 and timed_out > 0, outcomes
            assert await settled(http), (stuck_connections(http), outcomes)
        assert (gate_for(client._http).in_flight, gate_for(client._http).waiting) == (0, 0)
        started = time.monotonic()
        result = await client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
        elapsed = time.monotonic() - started
        assert result.success and elapsed < 1.0, elapsed
        assert stuck_connections(http) == []
    finally:
        await http.aclose()


async def test_a_cancellation_on_any_await_of_a_send_leaves_no_stuck_connection(process):
    """The gate keeps requests from waiting inside httpcore's pool, but between the pool handing
    a request a fresh connection and the request using it httpcore still passes a few awaits;
    a cancellation landing on one of them left that connection NEW and held by nobody (on the
    code before the fix: the cancellation after 10 loop turns, every time). Cancelling after
    each number of loop turns in turn covers every await of the path, whatever its length.
    With a pool of one connection a stuck one would also fail the next track."""
    for turns in range(40):
        http = httpx.AsyncClient(limits=httpx.Limits(max_connections=1))
        client = AsyncBillingClient(
            base_url=process.base_url,
            http_client=http,
            timeout=httpx.Timeout(TIMEOUT_S),
            max_retries=0,
        )
        try:
            task = asyncio.create_task(
                client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
            )
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            # A cancelled request's connection clears within a few loop turns on a quiet
            # machine; under load (CI beside CPU burners, load 6.6) it once took over 0.5 s. A
            # stuck one never clears, so the longer deadline only slows a failure down (and
            # the next track, on this pool of one connection, would fail on a stuck one too).
            assert await settled(http, within_s=5.0), (turns, stuck_connections(http))
            result = await client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
            assert result.success, turns
        finally:
            await http.aclose()


async def test_a_busy_pool_is_not_reported_as_a_server_that_is_down(process, caplog):
    """Frozen server, pool full: the calls inside time out (the API does not answer: an
    APITimeoutError, "unreachable"); the calls waiting for a connection fail with
    PoolExhaustedError (nothing sent), and each has its own log line."""
    client = small_client(process, max_retries=0)
    caplog.set_level(logging.INFO, logger="billing_ui.core")
    try:
        process.pause()
        try:
            calls = [
                client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
                for _ in range(POOL + 3)
            ]
            outcomes = await asyncio.gather(*calls, return_exceptions=True)
        finally:
            process.resume()
        kinds = Counter(type(o).__name__ for o in outcomes)
        assert kinds == {"APITimeoutError": POOL, "PoolExhaustedError": 3}, kinds
        exhausted = [o for o in outcomes if isinstance(o, PoolExhaustedError)]
        assert all(not e.request_sent for e in exhausted)
        assert not any(isinstance(e, APIConnectionError) for e in exhausted)
        assert "busy" in str(exhausted[0])
        timed_out = next(o for o in outcomes if isinstance(o, APITimeoutError))
        assert (classify(exhausted[0]), classify(timed_out)) == ("overloaded", "unreachable")
        logged = [r.getMessage() for r in caplog.records]
        assert sum("not sent: no free connection" in m for m in logged) == 3, logged
        assert sum("unreachable" in m for m in logged) == POOL, logged
    finally:
        await client._http.aclose()


async def test_a_full_waiting_line_fails_at_once(process):
    """The bulkhead: beyond max_waiting, a call is refused without waiting."""
    client = small_client(process, max_retries=0, timeout=httpx.Timeout(5.0))
    gate_for(client._http).max_waiting = 1
    try:
        process.pause()
        try:
            holders = [
                asyncio.create_task(
                    client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
                )
                for _ in range(POOL + 1)  # POOL inside, one waiting
            ]
            deadline = time.monotonic() + 5
            while gate_for(client._http).waiting < 1:
                assert time.monotonic() < deadline, "the extra call never started waiting"
                await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(PoolExhaustedError):
                await client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
            assert time.monotonic() - started < 2.0  # at once, not after the 5 s pool timeout
        finally:
            process.resume()
        results = await asyncio.gather(*holders)
        assert all(r.success for r in results)
    finally:
        await client._http.aclose()


async def test_a_server_that_is_down_is_a_connection_error_not_a_busy_pool():
    with socket.socket() as probe:  # a free port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = AsyncBillingClient(base_url=f"http://127.0.0.1:{port}", max_retries=0)
    try:
        with pytest.raises(APIConnectionError) as caught:
            await client.track_usage(customer_id=CUSTOMER, feature_key=FEATURE, quantity=1)
        assert not isinstance(caught.value, APITimeoutError | PoolExhaustedError)
        assert "Could not reach" in str(caught.value)
    finally:
        await client.aclose()
