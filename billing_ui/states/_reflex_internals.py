"""Every use of Reflex's internals, in one place (there is no public API for these yet).

Each one is pinned by ``tests/test_reflex_internals.py``, which fails loudly when a Reflex
release changes it: run ``make reflex-range`` (CI does) before widening the supported range in
pyproject.toml.

* :func:`is_token_connected` — whether a tab's socket is still open, on this instance or (with
  the Redis token manager) any: the app's event namespace keeps its token manager in the
  private ``_token_manager``; the app comes from ``reflex_base.registry.RegistrationContext``.
* :func:`is_token_elsewhere` — whether another worker holds a tab's socket: the token
  manager's ``token_to_socket`` records (``SocketRecord.instance_id``) and its own
  ``instance_id``.
* :func:`read_tab_state` — the running event's tab's current state, read without taking its
  lock: the running event's context (``reflex_base.event.context.EventContext``: its token and
  state manager, what ``async with self`` uses) and the manager's ``get_state`` with a
  ``BaseStateToken`` (what Reflex's own ``get_state`` does for a state missing from a tree).
* :class:`TabMemo` (with :func:`read_tab_state`, on Reflex's Redis state manager) — the manager's
  ``redis`` client, its private ``_get_required_state_classes``, a token's ``_state_key`` and
  ``BaseState._deserialize``: the states a poll tick reads come in one ``MGET``, as the
  manager's own ``get_state`` reads one class's tree (in one script with the query store's
  read of the meters, when both are on one Redis).
* :func:`route_events` — events that a track finishing after its handler returned
  (``states/track.py``'s deferred turn) runs next, routed as Reflex routes a handler's yields:
  ``reflex_base.event.processor.base_state_processor.chain_updates`` in the handler's copied
  event context.
* :func:`state_proxy` — a foreground handler's state wrapped as Reflex wraps a background
  handler's (``reflex.istate.proxy.StateProxy``), for work the handler hands to a task of its
  own (``states/track.py``: a track waits for its turn as data, not as a suspended event).
* :func:`drop_closed_tabs` — on Reflex's disk state manager (its default without Redis), the
  in-memory copies of closed tabs' states: the manager's ``states``, ``_token_last_touched``,
  ``_write_queue``, ``_states_locks``, ``_is_locked`` and ``set_state_for_substate``, the token
  manager's ``token_to_socket``, ``reflex.istate.manager.disk._mark_state_tree_touched`` (to
  write a whole tree) and ``reflex.istate.manager._release_state_tree`` (what the manager's
  own expiry does to a tree it drops).
* :func:`foreach_render_fn` — ``rx.foreach(items, fn)`` inspects ``fn``'s signature to decide
  whether to pass the index and refuses more than two parameters; a component with options is
  presented to it as taking only its first one.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from reflex.state import BaseState

F = TypeVar("F", bound=Callable[..., object])
S = TypeVar("S", bound="BaseState")

log = logging.getLogger(__name__)


def registered_app() -> Any | None:
    """The registered ``rx.App``, or ``None`` when no app is registered (an event processor
    run on its own, as in unit tests and benchmarks)."""
    from reflex_base.registry import RegistrationContext
    from reflex_base.utils.exceptions import ReflexRuntimeError

    try:
        return RegistrationContext.get().app
    except (LookupError, AttributeError, ReflexRuntimeError):
        return None


def event_namespace(app: Any | None = None) -> Any | None:
    """The socket.io event namespace of ``app`` (the registered app by default), or ``None``
    when there is no app (an event processor run on its own, as in unit tests and
    benchmarks)."""
    return getattr(app if app is not None else registered_app(), "event_namespace", None)


async def is_token_connected(token: str, app: Any | None = None) -> bool:
    """Whether the tab with this client token still has a socket (on any worker); True when it
    cannot be told. ``app``: the app to ask (the registered one by default; a task started
    outside Reflex's registration context must pass the one it captured)."""
    namespace = event_namespace(app)
    if namespace is None:
        return True
    connected: bool = await namespace._token_manager.is_token_connected(token)
    return connected


def is_token_elsewhere(token: str, app: Any | None = None) -> bool:
    """Whether another worker holds the tab's socket, as far as this worker's token manager
    knows (call :func:`is_token_connected` first: it refreshes the record); False when the
    socket is here or it cannot be told."""
    manager = getattr(event_namespace(app), "_token_manager", None)
    if manager is None:
        return False
    record = manager.token_to_socket.get(token)
    return record is not None and bool(record.instance_id != manager.instance_id)


@dataclass
class TabMemo:
    """What one tab's poll loop read at its last tick, kept by the loop between ticks (on
    Reflex's Redis state manager; unused in memory, where the read is the live object).

    Why (issue 10): a quiet tick read the tab's state three times (its own tree, then the
    entitlements' and the customer resolver's states as the tick asked for them), three
    ``MGET`` round trips that unpickled every state each time, nearly all of it unchanged.
    Now every state the previous tick ended up holding comes in one ``MGET``, and a state whose
    stored bytes are those of the last tick is the object unpickled then, not unpickled again
    (equal bytes are an equal state: nothing is trusted that was not read this tick)."""

    states: dict[str, tuple[bytes, Any]] = field(default_factory=dict)
    """Redis key -> (its bytes at the last tick, the state unpickled from them)."""
    root: Any | None = None
    """The tree of the last tick (the states the tick fetched on its own are attached)."""
    classes: list[Any] = field(default_factory=list)
    """The state classes read, a parent before its children, and their Redis keys."""
    keys: list[str] = field(default_factory=list)


async def read_tab_state(cls: type[S], memo: TabMemo | None = None, ride: Any | None = None) -> S:
    """The running event's tab's state ``cls`` as stored now (with its parents), read without
    its lock: for a look that may end in no write at all. Nothing read here is written back,
    so change nothing on it; on the in-memory manager it is the live object. ``memo``: the
    calling loop's :class:`TabMemo` (one read for the whole tick on Redis). ``ride``: a read
    of the query store's to send in the same round trip (a
    :class:`~billing_ui.core.redis_cache.ReadAhead`, used with ``memo`` on Redis only).

    The tab is the event's own token, the one ``async with self`` locks, not
    ``router.session.client_token``: that one comes from the event's router data, which only
    Reflex's socket handler fills in (an event processor driven directly, as in the state
    tests and benchmarks, leaves it empty, and a tick then read an empty tab and ended)."""
    from reflex.istate.manager.redis import StateManagerRedis
    from reflex.istate.manager.token import BaseStateToken
    from reflex_base.event.context import EventContext

    context = EventContext.get()
    token = BaseStateToken(ident=context.token, cls=cls)
    manager = context.state_manager
    if memo is not None and isinstance(manager, StateManagerRedis):
        root = await _read_memoized(manager, token, memo, ride)
    else:
        root = await manager.get_state(token)
    state = root.get_substate(cls.get_full_name().split("."))
    if not isinstance(state, cls):
        raise TypeError(f"{cls.__name__}: the tab's tree holds {type(state).__name__}")
    return state


def state_manager_redis() -> Any | None:
    """The Redis client of the running event's state manager (None: not Reflex's Redis state
    manager, or no event running)."""
    from reflex.istate.manager.redis import StateManagerRedis
    from reflex_base.event.context import EventContext

    try:
        manager = EventContext.get().state_manager
    except LookupError:
        return None
    return manager.redis if isinstance(manager, StateManagerRedis) else None


async def _read_memoized(manager: Any, token: Any, memo: TabMemo, ride: Any | None = None) -> Any:
    """The tab's tree on Redis in one ``MGET`` (see :class:`TabMemo`), linked as the manager's
    ``get_state`` links it; ``ride``'s read goes in the same command (one round trip)."""
    from reflex.state import BaseState
    from reflex_base.utils.exceptions import StateSchemaMismatchError

    wanted = set(memo.classes)
    if not wanted:
        wanted.update(manager._get_required_state_classes(token.cls, subclasses=True))
    stack = [memo.root] if memo.root is not None else []
    while stack:  # every state the last tick held, those it fetched on its own too
        node = stack.pop()
        wanted.add(type(node))
        stack.extend(node.substates.values())
    if len(wanted) != len(memo.classes):
        memo.classes = sorted(wanted, key=lambda c: c.get_full_name())  # parents first
        memo.keys = [token._state_key(c) for c in memo.classes]
    classes, keys = memo.classes, memo.keys
    if ride is None:
        stored = await manager.redis.mget(keys)
    else:
        stored = await ride.read_with_states(manager.redis, keys)
    seen: dict[str, tuple[bytes, Any]] = {}
    tree: dict[str, Any] = {}
    for state_cls, key, data in zip(classes, keys, stored, strict=True):
        known = memo.states.get(key)
        if data is not None and known is not None and known[0] == data:
            state = known[1]
            state.substates.clear()  # linked again below, to this tick's objects
        else:
            state = None
            if data is not None:
                with contextlib.suppress(StateSchemaMismatchError):
                    state = BaseState._deserialize(data=data)
            if state is None:  # not stored yet, or from another schema: a fresh one
                state = state_cls(init_substates=False, _reflex_internal_init=True)
        if data is not None:
            seen[key] = (data, state)
        name = state_cls.get_full_name()
        tree[name] = state
        parent_name, _, short = name.rpartition(".")
        if parent_name:
            parent = tree[parent_name]
            parent.substates[short] = state
            state.parent_state = parent
    memo.states = seen
    memo.root = tree[token.cls.get_root_state().get_full_name()]
    return memo.root


def foreach_render_fn(fn: F) -> F:
    """Present ``fn`` to ``rx.foreach`` as taking only its first parameter; calling ``fn``
    directly is unaffected (its options stay keyword arguments)."""
    first = next(iter(inspect.signature(fn).parameters.values()))
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [first.replace(default=inspect.Parameter.empty)]
    )
    return fn


def state_proxy(state: S) -> S:
    """``state`` (of a running foreground handler) as a background handler's ``self``: reads
    go through, writes only inside ``async with``, which takes the tab's lock again and sends
    the delta. Create it in the handler's context (it binds the event's tab): inside the
    handler, or in a task started with a copy of its context; use it once the handler has
    returned (the handler holds the lock until then)."""
    from reflex.istate.proxy import StateProxy

    return StateProxy(state)  # type: ignore[return-value]


async def route_events(events: Any, handler_name: str) -> None:
    """Queue ``events`` (event handlers or specs, as a handler yields them) for the tab of the
    current Reflex event context, as Reflex routes a handler's yields; for work that finishes
    after its handler returned, in a copy of the handler's context."""
    from reflex_base.event.processor.base_state_processor import chain_updates

    await chain_updates(events, handler_name=handler_name)


@dataclass(frozen=True)
class TabStatesSwept:
    """What :func:`drop_closed_tabs` did: trees dropped, and trees still in memory."""

    dropped: int
    kept: int


def state_manager_mode(app: Any) -> str | None:
    """``"disk"``, ``"memory"`` or ``"redis"``: the kind of ``app``'s state manager; None while
    it has none yet (Reflex makes it when the backend starts) or an unknown one."""
    from reflex.istate.manager.disk import StateManagerDisk
    from reflex.istate.manager.memory import StateManagerMemory
    from reflex.istate.manager.redis import StateManagerRedis

    manager = getattr(app, "_state_manager", None)
    kinds = {StateManagerDisk: "disk", StateManagerMemory: "memory", StateManagerRedis: "redis"}
    return next((kind for cls, kind in kinds.items() if isinstance(manager, cls)), None)


async def drop_closed_tabs(app: Any, idle_s: float) -> TabStatesSwept | None:
    """On Reflex's disk state manager: drop from this process's memory the state tree of every
    tab that has no socket on this worker, was last touched ``idle_s`` ago or more, is not
    locked and has nothing waiting to be written, after writing the whole tree to disk under
    the tab's lock. None on another manager (memory: the tree is the only copy; Redis: nothing
    is kept between events) or when the app's open sockets cannot be read (then nothing is
    dropped).

    Why the whole tree is written first: the manager writes only the substates an event
    changed, and deletes every file older than ``redis_token_expiration`` (an hour) whether its
    tree is in memory or not; a tab open for longer than that has parts only in memory (its
    sign-in, say), and dropping the tree without writing them would reset them when the tab
    comes back. Written under the tab's lock, nothing changes the tree meanwhile and an event
    that arrives waits, then loads what was just written. A tree whose write fails is kept."""
    if state_manager_mode(app) != "disk":
        return None
    from reflex.istate.manager import _release_state_tree
    from reflex.istate.manager.disk import _mark_state_tree_touched
    from reflex.istate.manager.token import BaseStateToken
    from reflex.state import BaseState

    manager = app._state_manager
    token_manager = getattr(event_namespace(app), "_token_manager", None)
    sockets = getattr(token_manager, "token_to_socket", None)
    if not isinstance(sockets, dict):
        return None

    def closed_and_idle(key: str) -> Any:
        """The tab's token if its tree may go now, else None (read with no await between)."""
        touched, token = manager._token_last_touched.get(key, (float("inf"), None))
        tree = manager.states.get(key)
        if not isinstance(token, BaseStateToken) or not isinstance(tree, BaseState):
            return None
        if touched > time.time() - idle_s or token.ident in sockets:
            return None
        if manager._is_locked(token) or token in manager._write_queue:  # keyed by token
            return None
        return token

    dropped = 0
    for key in list(manager._token_last_touched):
        if (token := closed_and_idle(key)) is None:
            continue
        lock = manager._states_locks.setdefault(token.lock_key, asyncio.Lock())
        async with lock:  # free (checked above, no await since): taken at once
            tree = manager.states[key]
            _mark_state_tree_touched(tree)
            try:
                await manager.set_state_for_substate(token, tree)
            except Exception:
                log.warning("tab states kept in memory: writing them failed", exc_info=True)
                continue
            if manager.states.get(key) is not tree or token.ident in sockets:
                continue  # replaced, or the tab came back, while its files were written
            del manager.states[key]
        # Its cycles broken, as the manager's expiry does: freed now, not at the next full gc.
        _release_state_tree(tree)
        dropped += 1
    return TabStatesSwept(dropped, len(manager.states))
