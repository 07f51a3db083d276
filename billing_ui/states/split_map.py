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

A list whose entries have a key (the meters) is kept the same way by a :class:`SplitList`
over a ``SplitMap`` (fewer buckets may fit a state-size budget better: ``SplitMap(buckets=4)``);
written whole (``state.metrics = views``), it replaces only the buckets whose entries changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import GenericAlias
from typing import Any, Final, Generic, TypeVar, get_args, overload

from reflex.vars import ArrayVar, FunctionStringVar, ObjectVar

T = TypeVar("T")

BUCKETS: Final = 8
"""Bucket vars per map: an update carries 1/8 of a full map (8 of 64 checks, 2 of 16 charts).
More buckets would shrink it further but lengthen every expression that reads the map (the
browser merges all of them at each use), and the full map is small anyway."""

_MERGE: Final = "(...buckets) => Object.assign({}, ...buckets)"
_VALUES: Final = "(map) => Object.values(map)"


class SplitMap(Generic[T]):
    """A map of entries ``T`` by key, kept in ``BUCKETS`` vars of the state that declares it
    (see the module docstring). Class access: the merged map as a frontend var; instance
    access: a merged copy (read-only: write with :meth:`put` / :meth:`drop`)."""

    def __init__(self, *, buckets: int = BUCKETS, prefix: str = "") -> None:
        """``buckets``: how many bucket vars (``BUCKETS`` unless the map's full size calls for
        fewer); ``prefix``: their name before ``_<i>`` (the attribute's name by default; a
        short one saves its length in every update and hydrate)."""
        self.name = ""
        self.count = buckets
        self.prefix = prefix
        self.buckets: tuple[str, ...] = ()

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        prefix = self.prefix or name
        self.buckets = tuple(f"{prefix}_{i}" for i in range(self.count))
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

    def assign(self, state: Any, entries: Mapping[str, T]) -> bool:
        """Make the map hold exactly ``entries``, in their order, writing only the buckets whose
        part changes; whether any did. For a map written whole each time (the meters): entry
        ``i`` of ``n`` goes to bucket ``i * count // n``, consecutive runs, so the browser's
        merge keeps the order, and the same keys always land in the same buckets (one changed
        entry sends its bucket; a key added or gone may shift the runs, and sends those)."""
        keys = list(entries)
        parts: list[dict[str, T]] = [{} for _ in self.buckets]
        for i, key in enumerate(keys):
            parts[i * self.count // len(keys)][key] = entries[key]
        changed = False
        for bucket, now, new in zip(self.buckets, self._parts(state), parts, strict=True):
            if list(now.items()) != list(new.items()):  # the order is shown: it counts
                setattr(state, bucket, new)
                changed = True
        return changed

    def drop(self, state: Any, key: str) -> None:
        """Remove ``key`` (only its bucket is sent; nothing when it is absent)."""
        for bucket, part in zip(self.buckets, self._parts(state), strict=True):
            if key in part:
                setattr(state, bucket, {k: v for k, v in part.items() if k != key})
                return


class SplitList(Generic[T]):
    """A list var kept as a :class:`SplitMap` of its entries by ``key`` (the meters: a list
    for components, ``rx.foreach``, filters; one bucket per changed entry on the wire).
    Class access: the list as a frontend var (the merged map's values, in order); instance
    access: the list; assigning a list assigns the map (:meth:`SplitMap.assign`), so code
    that sets the whole list sends only the buckets that changed.

    Limits: entries with the same key collapse into one (the meters have one per feature);
    and the browser's order is the map's, in which JavaScript puts keys that are array
    indices (``"100"``, which a feature key may be) first, before the others."""

    def __init__(self, split: SplitMap[T], key: Callable[[T], str]) -> None:
        self.split = split
        self.key = key

    @overload
    def __get__(self, state: None, owner: type) -> ArrayVar[list[T]]: ...
    @overload
    def __get__(self, state: object, owner: type) -> list[T]: ...
    def __get__(self, state: Any, owner: type) -> ArrayVar[list[T]] | list[T]:
        merged = self.split.__get__(state, owner)
        if state is None:
            entry = get_args(merged._var_type)[1]  # dict[str, T]: T
            values = FunctionStringVar.create(_VALUES).call(merged)
            return values.to(ArrayVar, GenericAlias(list, (entry,)))  # type: ignore[no-any-return]
        return list(merged.values())

    def __set__(self, state: Any, value: list[T]) -> None:
        self.split.assign(state, {self.key(v): v for v in value})
