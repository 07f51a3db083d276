"""One owner of the signed-in customer for every billing state, and a generation that drops
any answer that started before the customer changed.

Why (issue 7): each state used to remember its own customer, and not all of them got it right,
so an answer that started for customer A could land in B's tab after a sign-in. Now
:class:`BillingState` is the parent of every billing state. It holds the resolved customer and
a *generation* (a random token) that every sign-in, sign-out, reset or observed customer change
replaces, and it clears every billing state when that happens.

The check cannot be forgotten by a state added later, because it does not live in handlers:

1. A handler reaches the billing API only through ``_runtime.queries``, which refuses a call
   made without a :class:`Ticket`.
2. A ticket comes only from :meth:`BillingState._begin`, which works only inside a handler
   decorated with :func:`billing_event`.
3. From then on, every write to any billing state's var in that handler (assignment or
   in-place mutation) is compared with the owner's current generation. A write from an older
   generation raises :class:`StaleAnswer` before anything changes, and ``billing_event`` drops
   it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar, TypeVarTuple, Unpack

import reflex as rx
from reflex_base.event import EventCallback

from billing_ui.core.customer import NoCustomerError, resolve_customer
from billing_ui.core.errors import BillingError, InvalidInputError
from billing_ui.settings import get_settings

F = TypeVar("F", bound=Callable[..., Any])
S = TypeVar("S", bound=rx.State)
P = TypeVarTuple("P")


def _override(fn: F) -> F:
    """Mark a method as deliberately overriding rx.State's (Reflex refuses it otherwise)."""
    fn.__override_base_method__ = True  # type: ignore[attr-defined]
    return fn


_OWNER_FIELDS: frozenset[str] = frozenset(
    {"_customer", "_generation", "_tokens", "_tokens_at", "_told_at", "_running", "_ran_at",
     "_again", "router"}
)  # fmt: skip
"""The owner's bookkeeping: the tab's, not the customer's; never guarded, never cleared."""
MIN_REFETCH_INTERVAL: Final = 1.0
"""Seconds between two runs of one tab's coalesced refetch (see BillingState._coalesced)."""
STUCK_AFTER: Final = 120.0
"""A coalesced run older than this is taken for dead (its task was killed without cleanup)."""
TOLD_EVERY: Final = 5.0
"""Seconds between two "too many requests" notices to one tab."""
TOO_MANY = "Too many requests from this page: wait a moment."


@dataclass(frozen=True, slots=True)
class Ticket:
    """Who a handler works for, and under which generation: an answer is accepted only while
    the owner's generation is still ``generation``."""

    customer: str
    generation: str


class TooManyRequests(BillingError):
    """A tab called the handlers that reach the billing API faster than ``browser_burst`` /
    ``browser_rate`` allow; nothing was sent. ``notify`` is true for the first refusal of a
    while (the tab is told once, not once per refused call)."""

    def __init__(self, *, notify: bool) -> None:
        super().__init__(TOO_MANY)
        self.notify = notify


class StaleAnswer(Exception):
    """A billing state was about to take an answer that started for a previous customer (or
    before a reset). Raised by the vars' setter, dropped by :func:`billing_event`."""


_TICKET: ContextVar[Ticket | None] = ContextVar("billing_ui_ticket", default=None)
_IN_EVENT: ContextVar[bool] = ContextVar("billing_ui_in_event", default=False)


def current_ticket() -> Ticket | None:
    """The ticket of the running billing handler, if it took one."""
    return _TICKET.get()


@contextlib.contextmanager
def _scope(ticket: Ticket | None) -> Iterator[None]:
    tokens = (_TICKET.set(ticket), _IN_EVENT.set(True))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):  # reset from another context: nothing to undo
            _IN_EVENT.reset(tokens[1])
            _TICKET.reset(tokens[0])


class BillingState(rx.State):
    """The parent of every billing state (subclass it for a new one). Holds, backend-only, the
    customer the billing states currently show and their generation; see the module docstring.

    A subclass lists in ``_keep_on_customer_change`` the backend vars that belong to the tab,
    not to the customer (a poll loop's counter, the charts registered on the page); every other
    var returns to its default when the customer changes.
    """

    _customer: str = ""
    _generation: str = ""
    _tokens: float = -1.0  # the tab's token bucket (-1: full, never used)
    _tokens_at: float = 0.0
    _told_at: float = 0.0
    _running: dict[str, float] = {}  # noqa: RUF012 - coalesced runs in flight: slot -> start
    _ran_at: dict[str, float] = {}  # noqa: RUF012 - slot -> when it last started
    _again: list[str] = []  # noqa: RUF012 - slots asked for again while running
    _keep_on_customer_change: ClassVar[tuple[str, ...]] = ()

    # --- the guard ---------------------------------------------------------------------------
    @_override
    def __setattr__(self, name: str, value: Any) -> None:
        self._guard((name,))
        if _unchanged(self, name, value):
            # Reflex marks a var dirty on every assignment, equal or not, and a dirty var is
            # sent whole. Skipping an equal one means a refresh that finds nothing new sends
            # nothing (issue 8: 4 KB of unchanged meters per tab per tick before).
            return
        super().__setattr__(name, value)

    @_override
    def _mark_dirty(self, var_names: Iterable[str] | None = None) -> None:
        # In-place mutations of list/dict vars report here before they happen.
        if var_names is not None:
            var_names = tuple(var_names)
            self._guard(var_names)
        super()._mark_dirty(var_names)

    def _guard(self, names: Iterable[str]) -> None:
        ticket = _TICKET.get()
        if ticket is None:
            return
        cls = type(self)
        fields = cls.__fields__  # every declared var, public and backend-only
        if not any(n in fields and n not in _OWNER_FIELDS for n in names):
            return
        owner = _owner_of(self)
        if owner is not None and owner._generation != ticket.generation:
            raise StaleAnswer(f"{cls.__name__}: answer for a previous customer dropped")

    # --- tickets -----------------------------------------------------------------------------
    async def _begin(self) -> Ticket:
        """Resolve the signed-in customer (from the app's resolver, never from the browser) and
        take a ticket for this handler. Call inside ``async with self`` in a
        :func:`billing_event` handler, before reaching the billing API. A customer other than
        the one shown clears every billing state first. Raises NoCustomerError when nobody is
        signed in (after clearing what the previous customer left)."""
        if not _IN_EVENT.get():
            raise RuntimeError(
                f"{type(self).__name__}: _begin() outside a @billing_event handler; decorate the "
                "handler with billing_ui.states.base.billing_event"
            )
        owner = await self.get_state(BillingState)
        owner._take_token()
        try:
            customer = await resolve_customer(get_settings().customer_resolver, self)
        except NoCustomerError:
            if owner._customer or not owner._generation:
                await owner._change_customer("")
            _TICKET.set(Ticket("", owner._generation))
            raise
        if customer != owner._customer or not owner._generation:
            await owner._change_customer(customer)
        ticket = Ticket(customer, owner._generation)
        _TICKET.set(ticket)
        return ticket

    async def _begin_unlocked(self) -> Ticket | None:
        """(On a state read without the lock, see ``_reflex_internals.read_tab_state``.) A
        ticket for a tick paced by the server, not asked for by the browser, that may end
        without taking the lock: only when the tab already shows the customer the app's
        resolver names now. None: take the locked path (:meth:`_begin`, which also changes the
        customer and counts the call against the tab's token bucket). Whatever the handler
        then writes goes through ``async with self`` and :meth:`_confirm`."""
        if not _IN_EVENT.get():
            raise RuntimeError(f"{type(self).__name__}: _begin_unlocked() outside a handler")
        owner = _owner_of(self)
        if owner is None or not owner._customer or not owner._generation:
            return None
        try:
            customer = await resolve_customer(get_settings().customer_resolver, self)
        except NoCustomerError:
            return None
        if customer != owner._customer:
            return None
        ticket = Ticket(customer, owner._generation)
        _TICKET.set(ticket)
        return ticket

    async def _confirm(self, ticket: Ticket) -> None:
        """Before taking an answer (inside ``async with self``): resolve the customer again and
        raise :class:`StaleAnswer` if it is no longer ``ticket``'s (an app that changed the
        user without a reset), or if a reset came in between."""
        owner = await self.get_state(BillingState)
        try:
            customer: str = await resolve_customer(get_settings().customer_resolver, self)
        except NoCustomerError:
            customer = ""
        if customer != owner._customer:
            await owner._change_customer(customer)
        if owner._generation != ticket.generation:
            raise StaleAnswer(f"{type(self).__name__}: the customer changed")

    def _take_token(self) -> None:
        """(On the owner.) One call's token from the tab's bucket, or TooManyRequests."""
        settings = get_settings()
        now = time.time()
        burst = float(settings.browser_burst)
        tokens = burst if self._tokens < 0 else self._tokens
        tokens = min(burst, tokens + (now - self._tokens_at) * settings.browser_rate)
        self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            notify = now - self._told_at >= TOLD_EVERY
            if notify:
                self._told_at = now
            raise TooManyRequests(notify=notify)
        self._tokens = tokens - 1.0

    async def _coalesced(self, slot: str, run: Callable[[], Awaitable[object]]) -> None:
        """Run ``run`` for this tab at most once at a time per ``slot`` and at least
        ``MIN_REFETCH_INTERVAL`` apart: a call while one runs is folded into one more run after
        it. 500 refetch clicks are two upstream requests, not 500. Per customer generation: a
        run for a previous customer never holds up the next one. Not inside ``async with``."""
        async with self:
            owner = await self.get_state(BillingState)
            key = f"{slot}@{owner._generation}"
            started = owner._running.get(key)
            if started is not None and time.time() - started < STUCK_AFTER:
                if key not in owner._again:
                    owner._again = [*owner._again, key]
                return
            owner._running = {**owner._running, key: time.time()}
        try:
            while True:
                async with self:
                    owner = await self.get_state(BillingState)
                    wait = owner._ran_at.get(key, 0.0) + MIN_REFETCH_INTERVAL - time.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                async with self:
                    owner = await self.get_state(BillingState)
                    current = f"@{owner._generation}"
                    ran = {k: v for k, v in owner._ran_at.items() if k.endswith(current)}
                    owner._ran_at = {**ran, key: time.time()}
                    owner._again = [s for s in owner._again if s != key]
                await run()
                async with self:
                    owner = await self.get_state(BillingState)
                    if key not in owner._again:
                        return
        finally:
            with contextlib.suppress(Exception):
                async with self:
                    owner = await self.get_state(BillingState)
                    owner._running = {k: v for k, v in owner._running.items() if k != key}
                    owner._again = [s for s in owner._again if s != key]

    async def _change_customer(self, customer: str) -> None:
        """(On the owner.) A new generation for ``customer``; every billing state back to its
        defaults, except each one's ``_keep_on_customer_change``."""
        self._generation = uuid.uuid4().hex
        self._customer = customer
        with _unguarded():
            for cls in _billing_state_classes():
                try:
                    child = await self.get_state(cls)
                except RuntimeError:  # defined after this session's tree: holds nothing
                    continue
                kept = {name: getattr(child, name) for name in cls._keep_on_customer_change}
                for name, default in _own_defaults(cls).items():
                    if name not in kept:
                        setattr(child, name, default)
        if _IN_EVENT.get():
            _TICKET.set(Ticket(customer, self._generation))


def _unchanged(state: BillingState, name: str, value: Any) -> bool:
    """Whether assigning ``value`` to the public var ``name`` would change nothing the browser
    sees: same type and equal (``1``, ``1.0`` and ``True`` are equal in Python, not on the
    wire). Backend vars are always assigned: they cost no delta, and code may rely on their
    identity."""
    if name.startswith("_") or name not in type(state).__fields__:
        return False
    current = state.get_value(name)
    return type(current) is type(value) and bool(current == value)


def _owner_of(state: rx.State) -> BillingState | None:
    node: Any = state
    while node is not None and type(node) is not BillingState:
        node = node.parent_state
    return node


@contextlib.contextmanager
def _unguarded() -> Iterator[None]:
    token = _TICKET.set(None)
    try:
        yield
    finally:
        _TICKET.reset(token)


def _billing_state_classes() -> list[type[BillingState]]:
    found: list[type[BillingState]] = []
    stack: list[type[rx.State]] = [BillingState]
    while stack:
        for sub in sorted(stack.pop().get_substates(), key=lambda c: c.get_full_name()):
            if issubclass(sub, BillingState):
                found.append(sub)
                stack.append(sub)
    return found


def _own_defaults(cls: type[BillingState]) -> dict[str, Any]:
    """The defaults of the vars ``cls`` itself declares (not inherited, not computed)."""
    out: dict[str, Any] = {}
    for name, field in cls.__fields__.items():  # the same walk as rx.State.reset()
        if getattr(field, "_owner", None) is cls and name not in _OWNER_FIELDS:
            if name in cls.computed_vars:
                continue
            out[name] = field.default_value()
    return out


def billing_event(fn: Callable[[S, Unpack[P]], Any]) -> EventCallback[*P]:
    """``rx.event(background=True)`` for a billing handler: it may take a ticket
    (:meth:`BillingState._begin`), and an answer that turned stale is dropped quietly."""
    return _billing_handler(fn, background=True)


def billing_event_in_line(fn: Callable[[S, Unpack[P]], Any]) -> EventCallback[*P]:
    """:func:`billing_event` as a foreground Reflex event: it runs holding its tab's state lock
    (``self`` is the state itself, no ``async with self``), one at a time per tab.

    Why: Reflex starts every background event as a task at once, and a task first waits for
    its tab's lock; a burst of many tabs' clicks is then thousands of suspended tasks (frames,
    contexts, state proxies) at once, memory the process keeps after the burst. Reflex keeps a
    tab's foreground events in a per-tab line as data and runs them one by one. A handler made
    this way must return quickly (it blocks its tab's other events): it hands any slow work to
    a task of its own (``states/track.py``'s ``_TrackTurn.later``)."""
    return _billing_handler(fn, background=False)


def _billing_handler(fn: Callable[[S, Unpack[P]], Any], *, background: bool) -> EventCallback[*P]:
    accepted = _argument_names(fn)
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def gen_wrapper(self: Any, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            if await _refused(self, accepted, kwargs):
                return
            with _scope(None):
                try:
                    async for item in fn(self, *args, **kwargs):
                        yield item
                except StaleAnswer:
                    return
                except TooManyRequests as exc:
                    if exc.notify:
                        yield rx.toast.warning(TOO_MANY)

        return rx.event(gen_wrapper, background=background)  # type: ignore[return-value]
    if not inspect.iscoroutinefunction(fn):
        raise TypeError(f"billing_event needs an async handler, got {fn!r}")

    @functools.wraps(fn)
    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        if await _refused(self, accepted, kwargs):
            return None
        with _scope(None):
            try:
                return await fn(self, *args, **kwargs)
            except StaleAnswer:
                return None
            except TooManyRequests as exc:
                return rx.toast.warning(TOO_MANY) if exc.notify else None

    return rx.event(wrapper, background=background)  # type: ignore[return-value]


def _argument_names(fn: Callable[..., Any]) -> frozenset[str] | None:
    """The keyword names ``fn`` takes (None: any, it has ``**kwargs``)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return frozenset(p.name for p in params)


async def _refused(state: Any, accepted: frozenset[str] | None, kwargs: dict[str, Any]) -> bool:
    """Refuse an argument the handler does not have (any client can send any payload): the
    state's ``_refuse(error)`` says so if it has one; the call does nothing either way."""
    unknown = sorted(k for k in kwargs if accepted is not None and k not in accepted)
    if not unknown:
        return False
    exc = InvalidInputError.single(unknown[0][:64], "unknown_argument", "is not an argument")
    refuse = getattr(state, "_refuse", None)
    if refuse is not None:
        await refuse(exc)
    return True


async def reset_billing_states(state: rx.State) -> None:
    """Forget everything the billing states hold for the current customer, and drop every
    answer still in flight for them. Call from the handler that signs a user in or out, in
    that same event (or use :func:`switches_customer`). Inside a background handler, call it
    within ``async with self``."""
    owner = await state.get_state(BillingState)
    await owner._change_customer("")


def switches_customer(fn: F) -> F:
    """Decorate an app's sign-in / sign-out handler so the billing states are reset in the same
    event that changes the user (nothing of the previous customer can be shown, or arrive,
    afterwards)::

        class AuthState(rx.State):
            _user_id: str = ""

            @rx.event
            @billing_ui.switches_customer
            def sign_in(self, user_id: str) -> None:
                self._user_id = check_password_and_get_id(user_id)
    """
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError("switches_customer: the sign-in handler must return, not yield")

    @functools.wraps(fn)
    async def wrapper(self: rx.State, *args: Any, **kwargs: Any) -> Any:
        result = fn(self, *args, **kwargs)
        if isinstance(result, Awaitable):
            result = await result
        await reset_billing_states(self)
        return result

    return wrapper  # type: ignore[return-value]
