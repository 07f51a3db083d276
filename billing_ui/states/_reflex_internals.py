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
* :func:`foreach_render_fn` — ``rx.foreach(items, fn)`` inspects ``fn``'s signature to decide
  whether to pass the index and refuses more than two parameters; a component with options is
  presented to it as taking only its first one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from reflex.state import BaseState

F = TypeVar("F", bound=Callable[..., object])
S = TypeVar("S", bound="BaseState")


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


async def read_tab_state(cls: type[S]) -> S:
    """The running event's tab's state ``cls`` as stored now (with its parents), read without
    its lock: for a look that may end in no write at all. Nothing read here is written back,
    so change nothing on it; on the in-memory manager it is the live object.

    The tab is the event's own token, the one ``async with self`` locks, not
    ``router.session.client_token``: that one comes from the event's router data, which only
    Reflex's socket handler fills in (an event processor driven directly, as in the state
    tests and benchmarks, leaves it empty, and a tick then read an empty tab and ended)."""
    from reflex.istate.manager.token import BaseStateToken
    from reflex_base.event.context import EventContext

    context = EventContext.get()
    root = await context.state_manager.get_state(BaseStateToken(ident=context.token, cls=cls))
    state = root.get_substate(cls.get_full_name().split("."))
    if not isinstance(state, cls):
        raise TypeError(f"{cls.__name__}: the tab's tree holds {type(state).__name__}")
    return state


def foreach_render_fn(fn: F) -> F:
    """Present ``fn`` to ``rx.foreach`` as taking only its first parameter; calling ``fn``
    directly is unaffected (its options stay keyword arguments)."""
    first = next(iter(inspect.signature(fn).parameters.values()))
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [first.replace(default=inspect.Parameter.empty)]
    )
    return fn
