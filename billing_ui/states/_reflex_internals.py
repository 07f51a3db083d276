"""Every use of Reflex's internals, in one place (there is no public API for these yet).

Each one is pinned by ``tests/test_reflex_internals.py``, which fails loudly when a Reflex
release changes it: run ``make reflex-range`` (CI does) before widening the supported range in
pyproject.toml.

* :func:`is_token_connected` — whether a tab's socket is still open, on this instance or (with
  the Redis token manager) any: the app's event namespace keeps its token manager in the
  private ``_token_manager``; the app comes from ``reflex_base.registry.RegistrationContext``.
* :func:`foreach_render_fn` — ``rx.foreach(items, fn)`` inspects ``fn``'s signature to decide
  whether to pass the index and refuses more than two parameters; a component with options is
  presented to it as taking only its first one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., object])


def registered_app() -> Any | None:
    """The registered ``rx.App``, or ``None`` when no app is registered (an event processor
    run on its own, as in unit tests and benchmarks)."""
    from reflex_base.registry import RegistrationContext
    from reflex_base.utils.exceptions import ReflexRuntimeError

    try:
        return RegistrationContext.get().app
    except (LookupError, AttributeError, ReflexRuntimeError):
        return None


def event_namespace() -> Any | None:
    """The registered app's socket.io event namespace, or ``None`` when no app is registered
    (an event processor run on its own, as in unit tests and benchmarks)."""
    return getattr(registered_app(), "event_namespace", None)


async def is_token_connected(token: str) -> bool:
    """Whether the tab with this client token still has a socket; True when it cannot be
    told."""
    namespace = event_namespace()
    if namespace is None:
        return True
    connected: bool = await namespace._token_manager.is_token_connected(token)
    return connected


def foreach_render_fn(fn: F) -> F:
    """Present ``fn`` to ``rx.foreach`` as taking only its first parameter; calling ``fn``
    directly is unaffected (its options stay keyword arguments)."""
    first = next(iter(inspect.signature(fn).parameters.values()))
    fn.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [first.replace(default=inspect.Parameter.empty)]
    )
    return fn
