"""A per-tab map spread over a fixed set of bucket vars, so an update sends what changed.

Why (issue 8, part 3): Reflex's delta is per var. Any change to a var marks it dirty
(``BaseState.dirty_vars``), ``reflex/istate/delta.py``'s ``build_delta`` then sends its whole
value, and the browser's ``applyDelta`` (``reflex_base/.templates/web/utils/state.js``) replaces
the var whole: Reflex has no per-key patch. So one changed check in a map of 64 resent all 64,
and each refresh of one chart resent every chart of the tab (16, 62 points each).

A state class cannot grow a var per entry (a var is declared on the class, for every tab), but
it can declare a fixed set of ``BUCKETS`` vars per map, ``<name>_0`` ... ``<name>_7``, and keep
each entry in one of them. Writing an entry replaces only its bucket, so the delta carries that
bucket: at most ``ceil(cap / BUCKETS)`` entries, whatever the map holds (an entry goes into the
least-filled bucket, so no bucket holds more than that). ``tests/states/test_split_map.py`` and
``bench/map_update_bytes.py`` measure it on Reflex's real event path.

What stays as it was: the buckets are ordinary vars, so hydration (and a reconnect) sends them
all, a customer change resets them with every other var in the same event (``BillingState``),
and a key that is in no bucket reads as absent (a check not loaded yet is unknown, not denied).

Declare the bucket vars on the state and a :class:`SplitMap` named like them::

    class MyState(BillingState):
        checks_0: dict[str, CheckView] = {}
        ...
        checks_7: dict[str, CheckView] = {}
        checks: ClassVar[SplitMap[CheckView]] = SplitMap()  # checked at class creation

Read it in components as one map (``MyState.checks["sso"].has_access``, ``.contains``): the
browser merges the buckets. On the backend ``state.checks`` is a merged copy; write through
the map object kept in a module constant (``CHECKS.put(self, key, view)``).
"""

from __future__ import annotations

from typing import Any, Final, Generic, TypeVar, overload

from reflex.vars import FunctionStringVar, ObjectVar

T = TypeVar("T")

BUCKETS: Final = 8
"""Bucket vars per map: an update carries 1/8 of a full map (8 of 64 checks, 2 of 16 charts).
More buckets would shrink it further but lengthen every expression that reads the map (the
browser merges all of them at each use), and the full map is small anyway."""

_MERGE: Final = "(...buckets) => Object.assign({}, ...buckets)"


class SplitMap(Generic[T]):
    """A map of entries ``T`` by key, kept in ``BUCKETS`` vars of the state that declares it
    (see the module docstring). Class access: the merged map as a frontend var; instance
    access: a merged copy (read-only: write with :meth:`put` / :meth:`drop`)."""

    def __init__(self) -> None:
        self.name = ""
        self.buckets: tuple[str, ...] = ()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.buckets = tuple(f"{name}_{i}" for i in range(BUCKETS))
        missing = [b for b in self.buckets if b not in owner.__annotations__]
        if missing:
            raise TypeError(f"{owner.__name__}.{name}: declare the bucket vars {missing}")

    @overload
    def __get__(self, state: None, owner: type) -> ObjectVar[dict[str, T]]: ...
    @overload
    def __get__(self, state: object, owner: type) -> dict[str, T]: ...
    def __get__(self, state: Any, owner: type) -> ObjectVar[dict[str, T]] | dict[str, T]:
        if state is None:
            parts = [getattr(owner, b) for b in self.buckets]
            merged = FunctionStringVar.create(_MERGE).call(*parts)  # carries their var data
            return merged.to(ObjectVar, parts[0]._var_type)  # type: ignore[no-any-return]
        out: dict[str, T] = {}
        for part in self._parts(state):
            out.update(part)
        return out

    def _parts(self, state: Any) -> list[dict[str, T]]:
        return [state.get_value(b) for b in self.buckets]

    def put(self, state: Any, key: str, value: T, *, cap: int | None = None) -> None:
        """Set ``key`` (in its bucket, or the least-filled one for a new key). With ``cap``, a
        new key beyond it first evicts the oldest entry of the fullest bucket (the same bucket
        then takes the new key, so the update is still one bucket)."""
        parts = self._parts(state)
        index = next((i for i, p in enumerate(parts) if key in p), None)
        if index is None:
            if cap is not None and sum(len(p) for p in parts) >= cap:
                index = max(range(len(parts)), key=lambda i: len(parts[i]))
                parts[index] = dict(list(parts[index].items())[1:])
            else:
                index = min(range(len(parts)), key=lambda i: len(parts[i]))
        setattr(state, self.buckets[index], {**parts[index], key: value})

    def drop(self, state: Any, key: str) -> None:
        """Remove ``key`` (only its bucket is sent; nothing when it is absent)."""
        for bucket, part in zip(self.buckets, self._parts(state), strict=True):
            if key in part:
                setattr(state, bucket, {k: v for k, v in part.items() if k != key})
                return
