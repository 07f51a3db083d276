"""A poll tick's read of its tab on Reflex's Redis state manager (issue 10's tick cost): one
``MGET`` for every state the tick uses, and a state unpickled again only when its stored bytes
changed. Against a real ``redis-server`` and Reflex's own ``StateManagerRedis``."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from billing_ui.states import _reflex_internals as internals
from billing_ui.states.entitlements import FeatureEntitlementsState
from billing_ui.states.metrics import UsageMetricsState

PATH = UsageMetricsState.get_full_name().split(".")


@pytest.fixture
async def manager(redis_url: str) -> AsyncIterator[Any]:
    import redis.asyncio as aioredis
    from reflex.istate.manager.redis import StateManagerRedis

    client = aioredis.Redis.from_url(redis_url)
    state_manager = StateManagerRedis(redis=client)
    yield state_manager
    await state_manager.close()
    await client.aclose()


async def _mgets(manager: Any) -> int:
    stats = await manager.redis.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def _store_status(manager: Any, token: Any, status: str) -> None:
    """Write the tab's meters status as an event would (the state saved to Redis)."""
    root = await manager.get_state(token)
    root.get_substate(PATH).status = status
    await manager.set_state(token, root)


async def test_a_tick_reads_its_tab_in_one_mget_and_unpickles_only_what_changed(
    manager: Any,
) -> None:
    from reflex.istate.manager.token import BaseStateToken

    token = BaseStateToken(ident=f"memo-{uuid.uuid4().hex}", cls=UsageMetricsState)
    await _store_status(manager, token, "stale")
    memo = internals.TabMemo()

    async def read() -> Any:
        """One tick's read; asserts it took one MGET."""
        before = await _mgets(manager)
        tree = await internals._read_memoized(manager, token, memo)
        assert await _mgets(manager) - before == 1
        return tree

    first = (await read()).get_substate(PATH)
    assert first.status == "stale"
    again = (await read()).get_substate(PATH)
    assert again is first, "the same stored bytes: the state unpickled last time"

    await _store_status(manager, token, "error")
    changed = (await read()).get_substate(PATH)
    assert changed.status == "error" and changed is not first
    assert changed.parent_state is memo.root.get_substate(PATH[:-1])

    # A state the tick fetched on its own (the entitlements, the resolver's) joins the one read.
    await manager.get_state(
        BaseStateToken(ident=token.ident, cls=FeatureEntitlementsState),
        for_state_instance=memo.root,
    )
    tree = await read()
    ent = tree.get_substate(FeatureEntitlementsState.get_full_name().split("."))
    assert isinstance(ent, FeatureEntitlementsState)
    assert token._state_key(FeatureEntitlementsState) in memo.keys


async def test_the_meters_read_rides_in_the_tabs_read(manager: Any, redis_url: str) -> None:
    """On one Redis, the query store's read of the meters goes in the pipeline of the tab's
    read (one round trip for both), and its answer waits there for the tick's fetch."""
    from reflex.istate.manager.token import BaseStateToken

    from billing_ui.core.queries import METRICS, QUERY_TYPES
    from billing_ui.core.redis_cache import RedisQueryStore

    store = RedisQueryStore(redis_url, namespace=f"m{uuid.uuid4().hex[:8]}", types=QUERY_TYPES)
    token = BaseStateToken(ident=f"memo-{uuid.uuid4().hex}", cls=UsageMetricsState)
    await _store_status(manager, token, "success")
    memo = internals.TabMemo()
    try:
        async with store.reading_ahead(
            (METRICS, "c1"), stale_time=30, client=manager.redis
        ) as ride:
            assert ride is not None
            before = await _mgets(manager)
            tree = await internals._read_memoized(manager, token, memo, ride)
            assert await _mgets(manager) - before == 1
            assert tree.get_substate(PATH).status == "success"
            assert ride.answer == ["lead"], "no entry yet: this tick's fetch holds the lock"
    finally:
        await store.aclose()
