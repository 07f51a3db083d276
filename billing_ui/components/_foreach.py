"""Let a component with options also be passed straight to ``rx.foreach``."""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])


def foreach_render_fn(fn: F) -> F:
    """Present ``fn`` to introspection as taking only its first parameter.

    ``rx.foreach(items, fn)`` counts *all* of ``fn``'s parameters (keyword-only and ``**props``
    included) to decide whether to pass the index too, and refuses more than two. Components
    here take options, yet ``rx.foreach(UsageMetricsState.metrics, usage_meter)`` should just
    work; calling ``fn`` directly is unaffected (the options stay keyword arguments).
    """
    first = next(iter(inspect.signature(fn).parameters.values()))
    fn.__signature__ = inspect.Signature([first.replace(default=inspect.Parameter.empty)])
    return fn
