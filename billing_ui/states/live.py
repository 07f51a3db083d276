"""Live meters: when a customer's cached meters change (a fetch stored, a track's usage patched
in, on this worker or, with the Redis store, any), every open tab of that customer gets them as
a state delta at once, through Reflex's own server push (``app.modify_state``), instead of at
its own next tick up to ``refresh_interval`` later. The poll loop stays, for usage recorded
outside the app.

A tab follows its customer once its meters were fetched (:meth:`LiveMeters.follow`, from
``UsageMetricsState``) and stops when its poll loop ends or its socket is gone. Each worker
pushes only to the tabs it serves; the store's change feed
(:meth:`billing_ui.core.cache.QueryStore.on_change`) carries the news between workers.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from billing_ui.core.cache import Key
from billing_ui.core.queries import METRICS
from billing_ui.runtime import BillingRuntime, current

log = logging.getLogger("billing_ui.states")
Modify = Callable[[str], AbstractAsyncContextManager[Any]]
"""``modify(client_token)``: the tab's root state, to change out of band (its delta is sent)."""


def _app_modify(app: Any) -> Modify:
    """``app.modify_state`` for the meters' state."""
    import reflex as rx

    from billing_ui.states.metrics import UsageMetricsState

    return lambda token: app.modify_state(rx.BaseStateToken(ident=token, cls=UsageMetricsState))


def _registered_app() -> Any | None:
    """The registered app, if it serves sockets (None: no app, as under unit tests)."""
    from billing_ui.states import _reflex_internals as internals

    app = internals.registered_app()
    return app if internals.event_namespace(app) is not None else None


class LiveMeters:
    """The tabs this worker serves, by customer, and the push to them."""

    def __init__(self, runtime: BillingRuntime) -> None:
        self._runtime = runtime
        self._tabs: dict[str, set[str]] = {}
        self._customer_of: dict[str, str] = {}
        self._stop: Callable[[], None] | None = None
        self._listening_on: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued: set[str] = set()
        self.modify: Modify | None = None
        """How to reach a tab's state; the registered app's ``modify_state`` when unset. When
        set, no app is asked anything (whether a tab is connected, or on this worker)."""
        self._app: Any | None = None
        """The registered app, found in :meth:`follow` (an event handler, where Reflex's
        registration context is set; in a production worker the pushes run in a task that was
        started outside it, where it is not): its ``modify_state`` and its token manager."""
        self.pushed: Counter[str] = Counter()
        """Deltas pushed, by tab token, while the tab is followed (tests and benchmarks). A
        tab's count goes with it (:meth:`unfollow`): kept, every tab the worker ever served
        stayed in it for good, and a flood's counts (ints past the small-int cache, each
        ``+= 1`` a new object) were among the objects that kept CPython's arenas of the
        flood from being given back (the memory probe's owners of sparse arenas,
        ``BENCH_MEMORY_PROBE_OWNERS=1``)."""

    async def follow(self, token: str, customer: str, shown_at: float | None = None) -> None:
        """Push ``customer``'s meters to the tab ``token`` whenever they change.

        ``shown_at``: the ``updated_at`` of the meters' entry the tab shows. A tab follows only
        after its refresh has read and shown the meters, so a change published in between
        (a track on any worker) found nobody to tell: the tab kept the older meters until its
        next tick, a whole refresh interval (the e2e two-workers test: a meter silently stood
        still for 40 s). So a new follower then reads the entry once more, and if it is newer
        than what the tab shows, gets a push now: a change before the follow is in the entry
        (the store writes before it tells), a change after it is told."""
        loop = asyncio.get_running_loop()
        if self._app is None:
            self._app = _registered_app()
        if self._listening_on is not loop:  # listeners run on the loop that registered them
            if self._stop is not None:
                self._stop()
            self._stop = await self._runtime.store.on_change(self._changed)
            self._listening_on = loop
        if self._customer_of.get(token) == customer:
            return
        self.unfollow(token)
        self._customer_of[token] = customer
        self._tabs.setdefault(customer, set()).add(token)
        if shown_at is None:
            return
        entry = await self._runtime.store.peek((METRICS, customer))
        if entry is not None and entry.updated_at > shown_at:
            self._queue_push(token, customer)

    def unfollow(self, token: str) -> None:
        """Stop pushing to the tab ``token`` and forget it (its loop ended, or its socket is
        gone): nothing of a closed tab stays here."""
        self.pushed.pop(token, None)
        customer = self._customer_of.pop(token, None)
        tabs = self._tabs.get(customer or "")
        if tabs is not None:
            tabs.discard(token)
            if not tabs:
                del self._tabs[customer or ""]

    def followers(self, customer: str) -> int:
        return len(self._tabs.get(customer, ()))

    def _changed(self, key: Key) -> None:
        if len(key) != 2 or key[0] != METRICS:
            return
        customer = str(key[1])
        for token in list(self._tabs.get(customer, ())):
            self._queue_push(token, customer)

    def _queue_push(self, token: str, customer: str) -> None:
        # At most one push waits per tab: it reads the newest entry when it runs, so a burst
        # of N tracks by M tabs of one customer is about M pushes, not N x M (a 200-tab flood
        # made 800,000 before, and starved every other tab's events).
        if token in self._queued:
            return
        self._queued.add(token)
        # A fresh context, as the store's change listeners get: a push queued by a follow is
        # no part of the tab's event that followed (its registration context among them).
        task = asyncio.get_running_loop().create_task(
            self._push(token, customer), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _push(self, token: str, customer: str) -> None:
        from billing_ui.states import _reflex_internals as internals
        from billing_ui.states._runtime import pending_usage
        from billing_ui.states.base import _owner_of
        from billing_ui.states.metrics import UsageMetricsState
        from billing_ui.states.status import stamp
        from billing_ui.states.views import metric_views

        holding = False
        try:
            # An injected ``modify`` stands for the app (tests, benchmarks): no app is asked
            # then.
            app = None if self.modify is not None else self._app or _registered_app()
            if not await internals.is_token_connected(token, app):
                # A closed tab: its poll loop (which unfollows) may never have run, e.g. a tab
                # that only tracked. Pushing on would cost every later change one more state.
                self.unfollow(token)
                return
            if internals.is_token_elsewhere(token, app):
                # The tab's socket moved to another worker (a reload or a reconnect landed
                # there), whose own poll of the tab follows it now. Pushing from here as well
                # cost a second lock of the tab's state per change, contending with that
                # worker's push.
                self.unfollow(token)
                return
            modify = self.modify or (_app_modify(app) if app is not None else None)
            if modify is None:
                return
            # Read before the lock (a thread's query on the outbox: never while holding the
            # tab); the next tick corrects it if the outbox moved while this push waited.
            pending = await pending_usage(customer)
            async with modify(token) as root:
                # A change from now on queues another push; until the tab's lock is held, this
                # push is the one waiting, and it reads the newest entry below. (Dropped at the
                # start, it let every change of a flood queue one more push per tab at the
                # lock, ahead of the tab's tracks: 4,856 pushes waited for 201 tabs, and each
                # ran after its tab had closed: "send delta to disconnected client".)
                self._queued.discard(token)
                holding = True
                if not await internals.is_token_connected(token, app):
                    self.unfollow(token)  # closed while this push waited
                    return
                entry = await self._runtime.store.peek((METRICS, customer))
                if entry is None:
                    return
                state = await root.get_state(UsageMetricsState)
                owner = _owner_of(state)
                if owner is not None and owner._customer != customer:
                    self.unfollow(token)  # the tab signed in as someone else meanwhile
                    return
                if entry.updated_at < max(state.data_updated_at, state._confirmed_at):
                    return  # the tab already shows newer data: never move it backwards
                hard = {m.feature_key for m in state.metrics if m.hard_limit}
                views = metric_views(entry.data, hard, pending)
                changed = views != state.metrics
                state.metrics = views  # only the changed buckets are assigned (SplitList)
                stamp(state, entry.updated_at, changed=changed)
        except Exception:
            log.exception("billing_ui: pushing live meters to a tab failed")
            self.unfollow(token)
            return
        finally:
            if not holding:  # it never got the lock: the next change queues a push again
                self._queued.discard(token)
        self.pushed[token] += 1


_live: weakref.WeakKeyDictionary[BillingRuntime, LiveMeters] = weakref.WeakKeyDictionary()


def live_meters(runtime: BillingRuntime | None = None) -> LiveMeters:
    """The live meters of ``runtime`` (the installed one by default)."""
    runtime = runtime or current()
    live = _live.get(runtime)
    if live is None:
        live = _live[runtime] = LiveMeters(runtime)
    return live
