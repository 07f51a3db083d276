"""FairGate (core/bulkhead.py): round-robin admission by key, nothing left behind on cancel.

Pure asyncio, no I/O: the gate is the part of the many-tabs fix (issue 8, part 4) that decides
who goes next; ``bench/many_sockets.py`` and ``tests/e2e/test_many_sockets.py`` measure its
effect on a real backend.
"""

from __future__ import annotations

import asyncio

import pytest

from billing_ui.core.bulkhead import FairGate


async def test_waiters_are_admitted_round_robin_by_key() -> None:
    gate = FairGate(1)
    await gate.acquire("holder")
    order: list[str] = []

    async def one(key: str) -> None:
        await gate.acquire(key)
        order.append(key)
        gate.release()

    # A tab with five calls queued first, then two tabs with one each.
    tasks = [asyncio.create_task(one("busy")) for _ in range(5)]
    tasks += [asyncio.create_task(one("a")), asyncio.create_task(one("b"))]
    await asyncio.sleep(0)
    assert gate.waiting == 7 and gate.waiting_for("busy") == 5
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["busy", "a", "b", "busy", "busy", "busy", "busy"]
    assert gate.inside == 0 and gate.waiting == 0


async def test_a_cancelled_waiter_leaves_nothing_behind() -> None:
    gate = FairGate(1)
    await gate.acquire("x")
    waiter = asyncio.create_task(gate.acquire("y"))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting == 0
    gate.release()
    assert gate.inside == 0
    await gate.acquire("z")  # free again, at once
    assert gate.inside == 1


async def test_a_waiter_cancelled_after_admission_hands_the_slot_on() -> None:
    gate = FairGate(1)
    await gate.acquire("x")
    first = asyncio.create_task(gate.acquire("y"))
    second = asyncio.create_task(gate.acquire("z"))
    await asyncio.sleep(0)
    gate.release()  # admits "y" ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)  # "z" got the slot
    assert gate.inside == 1 and gate.waiting == 0
