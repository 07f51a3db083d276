"""The :class:`~billing_ui.core.cache.QueryStore` in Redis, shared by every worker of an app.

Why: with several backend workers (Reflex in prod mode, several machines) the in-memory store
gives one upstream request per customer per interval *per worker*, and a track on one worker
is not seen by the others until their own entry expires. Here every worker reads and writes
the same entries:

- an entry is a hash (data as JSON, when it was fetched, a generation, stale and failed flags)
  with a TTL (``ttl``), refreshed on every write;
- single-flight across workers: the caller that wins ``SET lock NX PX lease`` fetches; the
  others wait for its answer on one pub/sub channel (not by sleeping). If the fetcher dies,
  its lease runs out and the next caller fetches;
- invalidation bumps the generation of every key under the prefix (a set per prefix holds the
  keys under it, so nothing scans the keyspace), in one script: every worker sees it at once,
  and an answer fetched before it is not stored as fresh;
- :meth:`RedisQueryStore.set_data` is an optimistic transaction (``WATCH``/``MULTI``), retried
  on a concurrent write, so a monotonic update (``apply_usage``: a late answer never moves a
  meter backwards) holds across workers too.

Data is stored as JSON through pydantic: ``types`` maps a key's first part to the type of its
data (:data:`billing_ui.core.queries.QUERY_TYPES`), so a worker reads back the models another
wrote. The scripts touch keys they read from a set, which Redis Cluster does not allow: use
one Redis (or a primary with replicas), as Reflex's own state manager does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import TypeAdapter

from billing_ui.core.cache import (
    CacheEntry,
    CacheStats,
    ChangeListener,
    Create,
    Key,
    Listeners,
    Update,
    updated_entry,
)
from billing_ui.core.errors import APIStatusError, InvalidInputError, RemoteFetchError
from billing_ui.core.problems import classify

try:
    import redis.asyncio as aioredis
    from redis.exceptions import NoScriptError, WatchError
except ImportError as exc:  # pragma: no cover - the `redis` extra is not installed
    raise ImportError(
        "billing_ui.core.redis_cache needs the `redis` extra: pip install 'billing_ui[redis]'"
    ) from exc

T = TypeVar("T")

_CLAIM = """
local t = redis.call('time')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('hsetnx', KEYS[1], 'g', '0')
redis.call('pexpire', KEYS[1], ARGV[1])
for i = 2, #KEYS do
  redis.call('zadd', KEYS[i], now + ARGV[1], KEYS[1])
  for _, key in ipairs(redis.call('zrangebyscore', KEYS[i], '-inf', now, 'LIMIT', 0, ARGV[2])) do
    local left = redis.call('pttl', key)
    if left > 0 then redis.call('zadd', KEYS[i], now + left, key)
    else redis.call('zrem', KEYS[i], key) end
  end
  redis.call('pexpire', KEYS[i], 2 * ARGV[1])
end
return tonumber(redis.call('hget', KEYS[1], 'g'))
"""
"""Make the entry exist (so an invalidation can reach a fetch in flight for a new key), index
it under each of its prefixes, and return its generation.

An index is a sorted set scored by when its member is due to expire. Entries expire on their
own (TTL) but an index does not learn of it, so each claim trims its indexes: members whose
score has passed are dropped if their entry is gone, or re-scored by their remaining TTL if a
later write kept it alive (at most ``ARGV[2]`` per index per claim, so a script stays short;
each claim adds one member, so the trimming keeps up). Without it the sets of busy prefixes
(every key, every metrics key) would keep every customer ever seen."""

_STORE = """
if redis.call('exists', KEYS[1]) == 0 then return 0 end
local g = tonumber(redis.call('hget', KEYS[1], 'g') or '-1')
redis.call('hset', KEYS[1], 'x', '0')
if g ~= tonumber(ARGV[1]) then return 0 end
local before = redis.call('hget', KEYS[1], 'd')
redis.call('hset', KEYS[1], 'd', ARGV[2], 'u', ARGV[3], 'f', ARGV[4], 's', '0')
redis.call('pexpire', KEYS[1], ARGV[5])
if before == ARGV[2] then return 1 end
redis.call('hset', KEYS[1], 'n', ARGV[6])
return 2
"""
"""Store a fetched answer unless the key was invalidated (or expired) since the fetch began
(an expired entry is not written back: a hash without a TTL would never go). 0: not stored,
1: stored, the same data as before, 2: stored, new data (tagged ``ARGV[6]``: see
``_FRESH_OR_LEAD``)."""

_STORE_AND_TELL = (
    "local stored = (function()\n"
    + _STORE
    + "end)()\n"
    + """
if stored == 0 then return 0 end
local tag = redis.call('hget', KEYS[1], 'n') or ''
if stored == 2 then redis.call('publish', ARGV[7], ARGV[8]) end
redis.call('publish', ARGV[9], ARGV[10] .. tag .. '"}')
if redis.call('get', KEYS[2]) == ARGV[11] then redis.call('del', KEYS[2]) end
return {stored, tag}
"""
)
"""A fetcher's last step in one round trip, where it was four (store, tell the listeners of
changed data, hand the answer to the waiters, release the lock: issue 10, the Redis tick
cost): ``_STORE`` on ``KEYS[1]``; then, if stored, publish ``ARGV[8]`` on ``ARGV[7]`` when
the data is new, the outcome on ``ARGV[9]`` (``ARGV[10]`` completed with the entry's tag, so
waiters can answer ``same`` later), and release the lock ``KEYS[2]`` held by ``ARGV[11]``.
Returns ``{stored, tag}``, or 0 when not stored: then nothing was published or released, and
the caller tells the waiters what the store holds instead."""

_FRESH_OR_LEAD = """
local e = redis.call('hgetall', KEYS[1])
local h = {}
for i = 1, #e, 2 do h[e[i]] = e[i + 1] end
if h['d'] and h['s'] ~= '1' and h['x'] ~= '1'
    and tonumber(ARGV[1]) - tonumber(h['f']) < tonumber(ARGV[2]) then
  if ARGV[5] ~= '' and h['n'] == ARGV[5] then return {'same', h['u'], h['f']} end
  return {'fresh', e}
end
if redis.call('set', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then return {'lead'} end
return {'busy'}
"""
"""The entry (``fresh``) if it may be served: younger than ``stale_time`` by the caller's
clock, not invalidated, and its last fetch did not fail; else the key's lock for the caller
(``lead``); else ``busy``: another caller holds it and fetches.

``ARGV[5]``: the tag (field ``n``) of the data the caller already holds decoded, or "". Every
write of new data tags it anew (a random tag: an entry that expired and came back cannot
repeat one), so the same tag is the same data: the script then answers ``same`` with the
times alone, and the data is neither sent nor decoded again (issue 10: every tick of every
tab reads this entry; it rarely changed)."""

_STATES_AND_FRESH_OR_LEAD = (
    "local n = #KEYS - 2\n"
    "local states = redis.call('mget', unpack(KEYS, 1, n))\n"
    "local function read(entry, lock)\n"
    + _FRESH_OR_LEAD.replace("KEYS[1]", "entry").replace("KEYS[2]", "lock")
    + "end\n"
    "return {states, read(KEYS[n + 1], KEYS[n + 2])}\n"
)
"""A poll tick's read of its tab's states (``MGET`` of every key but the last two) and of its
meters' entry (``_FRESH_OR_LEAD`` on the last two), one command: ``{states, answer}``. It was
an ``MGET`` and an ``EVALSHA`` in one pipeline; one command instead costs the worker one
command's client work (packing, checkout, parsing) instead of a pipeline's (issue 10: the
Redis tick's CPU in the worker is mostly redis-py's per round trip work)."""

_FAILED = """
if redis.call('exists', KEYS[1]) == 1 then redis.call('hset', KEYS[1], 'x', '1') end
"""

_INVALIDATE = """
local n = 0
for _, key in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do
  if redis.call('exists', key) == 1 then
    if ARGV[1] == '1' then
      redis.call('hset', key, 's', '1')
      redis.call('hincrby', key, 'g', 1)
    end
    n = n + 1
  else
    redis.call('zrem', KEYS[1], key)
  end
end
return n
"""
"""Mark stale (``ARGV[1] == '1'``) or only count the live keys under a prefix."""

_INDEX = "ixz"
"""The kind of the prefix indexes' Redis keys (sorted sets; ``ix`` held plain sets before)."""
TRIM_PER_CLAIM = 100
"""At most this many members of each index are checked for expiry per claim."""

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


def _failure(exc: Exception) -> dict[str, Any]:
    """What the waiters on other workers learn of a failed fetch: its class and message, and
    its kind (the operator problem, the API's status and message), from which their UI picks
    the same sentence as this worker's (see :class:`RemoteFetchError`)."""
    api = exc if isinstance(exc, APIStatusError) else None
    return {
        "error": f"{type(exc).__name__}: {exc}",
        "problem": classify(exc),
        "status": api.status_code if api else None,
        "message": api.message if api else None,
    }


@dataclass
class _Connection:
    """One event loop's Redis client and its listener of fetch outcomes."""

    client: Any
    """An ``aioredis.Redis``; typed Any because redis-py types its commands for its sync and
    async clients at once (``Awaitable[X] | X``), which no ``await`` type-checks."""
    ready: asyncio.Event
    listener: asyncio.Task[None] | None = None
    waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = field(default_factory=dict)
    """Callers on this loop waiting for another's fetch, by key."""
    scripts: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    """Each script's load into Redis, by its source (one per connection, shared by the
    callers that ask for it while it is under way: the first ticks of many tabs come at
    once): run by its SHA (``EVALSHA``), not sent whole and hashed again by Redis on every
    call (issue 10: every tick of every tab runs ``_FRESH_OR_LEAD``)."""

    def script(self, source: str) -> Any:
        """``source`` registered with this connection's client (an ``AsyncScript``)."""
        found = self.scripts.get(source)
        if found is None:
            found = self.scripts[source] = self.client.register_script(source)
        return found

    async def loaded(self, source: str) -> str:
        """The SHA of ``source``, loaded into Redis (once per connection: a pipeline of another
        client can then run it by its SHA)."""
        script = self.script(source)
        loading = self.sent.get(source)
        if loading is None:
            loading = self.sent[source] = asyncio.ensure_future(self.client.script_load(source))
        try:
            await asyncio.shield(loading)
        except Exception:
            if self.sent.get(source) is loading:
                del self.sent[source]  # the next caller tries again
            raise
        return str(script.sha)


@dataclass
class ReadAhead:
    """One entry's read (``_FRESH_OR_LEAD``), sent by another client of the same Redis: a
    poll tick's read of its tab's states carries its meters' read, one command for both
    (:meth:`read_with_states`; it was an ``MGET`` and this read in one pipeline, and before
    that two round trips: issue 10, the Redis tick cost; a command costs the worker and
    redis-server more CPU than the work it does). See :meth:`RedisQueryStore.reading_ahead`.

    A :meth:`RedisQueryStore.fetch` of the same key and staleness in the same context then
    starts from this answer instead of asking Redis again, once. An answer that the entry may
    be served (``same``, ``fresh``) is dropped by an invalidation in that context (a refresh
    forced after queued usage was delivered); the lock (``lead``) and someone else's fetch
    (``busy``) still hold. Unused, its lock is released when the block ends."""

    entry_name: str
    lock_name: str
    stale: str
    token: str
    args: list[Any]
    waiter: asyncio.Future[dict[str, Any]]
    sha: str
    states_sha: str
    """``_STATES_AND_FRESH_OR_LEAD``'s SHA (:meth:`read_with_states`)."""
    owner: tuple[Any, Any]
    """The store and the task that read ahead: only their fetch uses the answer (a task
    started inside the block inherits the context, not the read)."""
    held: Any
    """The data this process held decoded when the read was sent (its tag is in ``args``)."""
    answer: list[Any] | None = None
    used: bool = False

    def add_to(self, pipe: Any) -> None:
        """Queue the read in ``pipe`` (a redis-py pipeline on the same Redis, without
        ``MULTI``); hand its reply to :meth:`answered`."""
        pipe.evalsha(self.sha, 2, self.entry_name, self.lock_name, *self.args)

    async def read_with_states(self, client: Any, keys: list[str]) -> list[Any]:
        """``MGET keys`` on ``client`` (a redis-py client of the same Redis, without
        ``decode_responses``) with this read in the same command
        (``_STATES_AND_FRESH_OR_LEAD``); the stored values, in ``keys``' order. If the script
        is not loaded there (a Redis restarted or flushed), the values alone, and no answer:
        the fetch then asks itself."""
        try:
            stored, answer = await client.evalsha(
                self.states_sha, len(keys) + 2, *keys, self.entry_name, self.lock_name, *self.args
            )
        except NoScriptError:
            return list(await client.mget(keys))
        self.answer = _text(answer)
        return list(stored)

    def answered(self, reply: Any) -> None:
        """The pipeline's reply to the read (bytes or str; an error, e.g. the script not yet
        loaded on this Redis, leaves no answer: the fetch asks itself)."""
        if not isinstance(reply, Exception):
            self.answer = _text(reply)


def _text(reply: Any) -> Any:
    """A Redis reply with its bytes decoded (a client without ``decode_responses``)."""
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, list):
        return [_text(item) for item in reply]
    return reply


_READ_AHEAD: ContextVar[ReadAhead | None] = ContextVar("billing_ui_read_ahead", default=None)


class RedisQueryStore:
    """A :class:`~billing_ui.core.cache.QueryStore` in Redis (see the module docstring).

    ``url``: ``redis://host:port/db``. ``namespace`` prefixes every Redis key, so apps (or
    tests) can share one Redis. ``ttl``: seconds an entry lives after its last write. ``lease``:
    seconds a fetcher holds the key's lock; a waiter gives up waiting after it and fetches
    itself (keep it above the client's timeout including retries).
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "billing_ui",
        ttl: float = 600.0,
        lease: float = 15.0,
        types: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.time,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (("ttl", ttl), ("lease", lease)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInputError.single(name, "gt", "must be a number of seconds > 0")
        self.url = url
        self.namespace = namespace
        self.ttl_ms = int(ttl * 1000)
        self.lease = lease
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = CacheStats()
        self._adapters = {name: TypeAdapter(t) for name, t in (types or {}).items()}
        self._any: TypeAdapter[Any] = TypeAdapter(Any)
        self._channel = f"{namespace}:done"
        self._changes = f"{namespace}:changed"
        self._listeners = Listeners()
        self._connections: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Connection] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self.decoded_entries = 1024
        """At most this many entries' decoded data are kept to be served again (``same``)."""
        self._decoded: OrderedDict[str, tuple[str, Any]] = OrderedDict()
        self._names: dict[tuple[str, Key], str] = {}
        self._lock_ids = itertools.count()
        self._instance = uuid.uuid4().hex
        """With a counter, the id of each lock this process takes: unique across workers,
        without reading the OS's random source for every read of an entry (each may take the
        lock)."""

    # -- names and encoding -------------------------------------------------------------

    def _name(self, kind: str, key: Key) -> str:
        """The Redis key of ``kind`` for ``key`` (remembered: every tick of every tab names its
        entry, its lock and its channel tag)."""
        name = self._names.get((kind, key))
        if name is None:
            if len(self._names) >= 4 * self.decoded_entries:
                self._names.clear()
            name = f"{self.namespace}:{kind}:" + json.dumps(list(key), separators=(",", ":"))
            self._names[(kind, key)] = name
        return name

    def _adapter(self, key: Key) -> TypeAdapter[Any]:
        return self._adapters.get(str(key[0]), self._any) if key else self._any

    def _encode(self, key: Key, entry: CacheEntry[Any]) -> dict[str, str]:
        data = self._adapter(key).dump_json(entry.data).decode()
        return {"d": data, "u": repr(entry.updated_at), "f": repr(entry.fetched_at)}

    def _decode(self, key: Key, fields: Mapping[str, str]) -> CacheEntry[Any] | None:
        if "d" not in fields:
            return None
        return CacheEntry(
            data=self._adapter(key).validate_json(fields["d"]),
            updated_at=float(fields["u"]),
            fetched_at=float(fields["f"]),
        )

    def _decode_held(
        self, name: str, key: Key, fields: Mapping[str, str]
    ) -> CacheEntry[Any] | None:
        """:meth:`_decode`, but data this process holds decoded under the entry's tag is not
        decoded again (the same tag is the same data, see ``_FRESH_OR_LEAD``), and what it
        decodes it holds. Why (issue 10, the Redis tick cost): each fetch of a customer's
        meters peeks at its usage samples to record them, and decoding that entry with
        pydantic on every fetch cost more than the rest of the peek."""
        tag = fields.get("n")
        if tag and "d" in fields:
            held_tag, data = self._held(name)
            if held_tag == tag:
                return CacheEntry(data, float(fields["u"]), float(fields["f"]))
        entry = self._decode(key, fields)
        if entry is not None:
            self._hold(name, tag, entry.data)
        return entry

    def _held(self, name: str) -> tuple[str, Any]:
        """The tag and data of the entry ``name`` as this process last decoded it ("": none)."""
        held = self._decoded.get(name)
        if held is None:
            return "", None
        self._decoded.move_to_end(name)
        return held

    def _hold(self, name: str, tag: str | None, data: Any) -> None:
        if tag:
            self._decoded[name] = (tag, data)
            self._decoded.move_to_end(name)
            while len(self._decoded) > self.decoded_entries:
                self._decoded.popitem(last=False)

    # -- connection and listener --------------------------------------------------------

    async def _redis(self) -> Any:
        return (await self._connection()).client

    async def _connection(self) -> _Connection:
        """This loop's client (a redis-py asyncio client must stay on its loop), with the
        listener subscribed before any caller waits on it."""
        loop = asyncio.get_running_loop()
        conn = self._connections.get(loop)
        if conn is None:
            client = aioredis.Redis.from_url(self.url, decode_responses=True)
            conn = self._connections[loop] = _Connection(client, asyncio.Event())
            conn.listener = loop.create_task(self._listen(conn))
        if not conn.ready.is_set():
            await asyncio.wait_for(conn.ready.wait(), timeout=self.lease)
        return conn

    async def _listen(self, conn: _Connection) -> None:
        """Hand every fetch outcome published on the channel to this worker's waiters."""
        pubsub = conn.client.pubsub()
        try:
            await pubsub.subscribe(self._channel, self._changes)
            loop = asyncio.get_running_loop()
            subscribed = 0
            async for message in pubsub.listen():
                if message["type"] == "subscribe":
                    subscribed += 1
                    if subscribed == 2:
                        conn.ready.set()
                elif message["type"] == "message" and message["channel"] == self._changes:
                    key = tuple(json.loads(message["data"]))
                    self._listeners.notify(key, only=loop)
                elif message["type"] == "message":
                    outcome = json.loads(message["data"])
                    for waiter in conn.waiters.pop(outcome["k"], []):
                        if not waiter.done():
                            waiter.set_result(outcome)
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    # -- the protocol ---------------------------------------------------------------------

    async def fetch(
        self, key: Key, fetcher: Callable[[], Awaitable[T]], *, stale_time: float
    ) -> CacheEntry[T]:
        conn = await self._connection()
        lock_name = self._name("lock", key)
        entry_name = self._name("e", key)
        tag = self._name("", key)
        joined = False
        loop = asyncio.get_running_loop()
        stale = repr(min(float(stale_time), 1e18))  # Lua reads no "inf"
        ahead = _READ_AHEAD.get()
        if ahead is not None and (
            ahead.used
            or ahead.answer is None
            or ahead.owner != (self, asyncio.current_task())
            or (ahead.entry_name, ahead.stale) != (entry_name, stale)
        ):
            ahead = None
        while True:
            # Listening before the lock is seen taken: the fetcher's outcome, published after,
            # cannot be missed.
            if ahead is not None:  # read in the tick's pipeline (ReadAhead), its waiter too
                ahead.used = True
                waiter, token, answer = ahead.waiter, ahead.token, ahead.answer or []
                data_held = ahead.held
                ahead = None
            else:
                waiter = loop.create_future()
                conn.waiters.setdefault(tag, []).append(waiter)
                answer = []
            try:
                if not answer:
                    token = f"{self._instance}:{next(self._lock_ids)}"
                    # One round trip decides: the entry if it may be served, else the lock
                    # (this caller fetches), else someone else is fetching (wait for their
                    # outcome). It was three (read, lock, check the lock) for each of a
                    # customer's tabs that ticks while one of them fetches (issue 10).
                    tag_held, data_held = self._held(entry_name)
                    answer = await conn.script(_FRESH_OR_LEAD)(
                        keys=[entry_name, lock_name],
                        args=[repr(self.clock()), stale, token, int(self.lease * 1000), tag_held],
                    )
                if answer[0] == "same":
                    self.stats.hits += 1
                    return CacheEntry(data_held, float(answer[1]), float(answer[2]))
                if answer[0] == "fresh":
                    fields = dict(zip(answer[1][::2], answer[1][1::2], strict=True))
                    entry = self._decode_held(entry_name, key, fields)
                    if entry is not None:
                        self.stats.hits += 1
                        return entry
                    continue
                if answer[0] == "lead":
                    self.stats.fetches += 1
                    # Its own task: a caller that is cancelled (its tab closed) does not cancel
                    # the fetch that callers on every worker are waiting on.
                    task = loop.create_task(self._lead(conn, key, lock_name, token, fetcher))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    return await asyncio.shield(task)
                if not joined:
                    self.stats.joined += 1
                    joined = True
                outcome = await asyncio.wait_for(asyncio.shield(waiter), timeout=self.lease)
            except TimeoutError:
                continue  # the fetcher's lease ran out: it died; fetch ourselves
            finally:
                waiters = conn.waiters.get(tag, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    conn.waiters.pop(tag, None)
            if "retry" in outcome:
                continue  # the lock was freed without a fetch (ReadAhead): ask again
            if "error" in outcome:
                raise RemoteFetchError(
                    outcome["error"],
                    problem=outcome.get("problem"),
                    status_code=outcome.get("status"),
                    api_message=outcome.get("message"),
                )
            decoded = outcome.get("decoded")  # one decode for this loop's waiters
            if decoded is None:
                decoded = outcome["decoded"] = CacheEntry(
                    data=self._adapter(key).validate_python(outcome["entry"]),
                    updated_at=outcome["u"],
                    fetched_at=outcome["f"],
                )
                self._hold(entry_name, outcome.get("n"), decoded.data)
            return decoded

    async def _lead(
        self,
        conn: _Connection,
        key: Key,
        lock_name: str,
        token: str,
        fetcher: Callable[[], Awaitable[T]],
    ) -> CacheEntry[T]:
        r = conn.client
        entry_name, tag = self._name("e", key), self._name("", key)
        indexes = [self._name(_INDEX, key[:n]) for n in range(len(key) + 1)]
        released = False
        try:
            generation = await conn.script(_CLAIM)(
                keys=[entry_name, *indexes], args=[self.ttl_ms, TRIM_PER_CLAIM]
            )
            try:
                data = await fetcher()
            except Exception as exc:
                await conn.script(_FAILED)(keys=[entry_name])
                failure = {"k": tag, **_failure(exc)}
                await r.publish(self._channel, json.dumps(failure))
                raise
            entry = CacheEntry(data=data, updated_at=self.wall_clock(), fetched_at=self.clock())
            encoded = self._encode(key, entry)
            # The outcome as the waiters read it, the entry's JSON as stored (not parsed and
            # dumped again); the script appends the entry's tag and closes it.
            head = (
                f'{{"k":{json.dumps(tag)},"u":{encoded["u"]},"f":{encoded["f"]},'
                f'"entry":{encoded["d"]},"n":"'
            )
            stored = await conn.script(_STORE_AND_TELL)(
                keys=[entry_name, lock_name],
                args=[
                    generation, encoded["d"], encoded["u"], encoded["f"], self.ttl_ms,
                    uuid.uuid4().hex, self._changes, self._key_json(key), self._channel, head,
                    token,
                ],
            )  # fmt: skip
            if stored:  # stored, told and released in that one round trip
                released = True
                self._hold(entry_name, stored[1], entry.data)
                return entry
            # Invalidated meanwhile: what the store holds (QueryStore.fetch).
            held = await self.peek(key)
            if held is not None:
                entry, encoded = held, self._encode(key, held)
            outcome: dict[str, Any] = {
                "k": tag,
                "entry": json.loads(encoded["d"]),
                "u": entry.updated_at,
                "f": entry.fetched_at,
            }
            await r.publish(self._channel, json.dumps(outcome))
            return entry
        finally:
            if not released:
                await conn.script(_RELEASE)(keys=[lock_name], args=[token])

    @contextlib.asynccontextmanager
    async def reading_ahead(
        self, key: Key, *, stale_time: float, client: Any
    ) -> AsyncIterator[ReadAhead | None]:
        """A :class:`ReadAhead` of ``key`` for ``client``'s pipeline (None: ``client`` is not
        on this store's Redis), used by a :meth:`fetch` of ``key`` inside the block."""
        conn = await self._connection()
        if not self._same_redis(conn.client, client):
            yield None
            return
        entry_name, tag = self._name("e", key), self._name("", key)
        stale = repr(min(float(stale_time), 1e18))
        token = f"{self._instance}:{next(self._lock_ids)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        conn.waiters.setdefault(tag, []).append(waiter)  # before the read is sent
        sha = await conn.loaded(_FRESH_OR_LEAD)
        states_sha = await conn.loaded(_STATES_AND_FRESH_OR_LEAD)
        held = self._held(entry_name)
        ahead = ReadAhead(
            entry_name=entry_name,
            lock_name=self._name("lock", key),
            stale=stale,
            token=token,
            args=[repr(self.clock()), stale, token, int(self.lease * 1000), held[0]],
            waiter=waiter,
            sha=sha,
            states_sha=states_sha,
            owner=(self, asyncio.current_task()),
            held=held[1],
        )
        reset = _READ_AHEAD.set(ahead)
        try:
            yield ahead
        finally:
            with contextlib.suppress(ValueError):  # exited in another context: nothing to undo
                _READ_AHEAD.reset(reset)
            if not ahead.used:
                waiters = conn.waiters.get(tag, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    conn.waiters.pop(tag, None)
                if ahead.answer and ahead.answer[0] == "lead":
                    # Nobody fetches after all: free the lock, and tell the callers that wait
                    # for this fetch to ask again (not to wait out the lease).
                    await conn.script(_RELEASE)(keys=[ahead.lock_name], args=[token])
                    await conn.client.publish(self._channel, json.dumps({"k": tag, "retry": 1}))

    @staticmethod
    def _same_redis(ours: Any, theirs: Any) -> bool:
        """Whether two redis-py clients talk to the same server and database."""
        names = ("host", "port", "path", "db", "username")
        try:
            a, b = ours.connection_pool.connection_kwargs, theirs.connection_pool.connection_kwargs
        except AttributeError:
            return False
        return all(a.get(n) == b.get(n) for n in names)

    async def peek(self, key: Key) -> CacheEntry[Any] | None:
        r = await self._redis()
        name = self._name("e", key)
        return self._decode_held(name, key, await r.hgetall(name))

    async def set_data(self, key: Key, update: Update, *, create: Create | None = None) -> None:
        conn = await self._connection()
        r = conn.client
        name = self._name("e", key)
        claimed = False
        async with r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(name)
                    entry = self._decode(key, await pipe.hgetall(name))
                    if entry is None and create is None:
                        await pipe.unwatch()
                        return
                    if entry is None and not claimed:
                        # Made here: exists, expires and is indexed as a fetched entry is.
                        await pipe.unwatch()
                        indexes = [self._name(_INDEX, key[:n]) for n in range(len(key) + 1)]
                        await conn.script(_CLAIM)(
                            keys=[name, *indexes], args=[self.ttl_ms, TRIM_PER_CLAIM]
                        )
                        claimed = True
                        continue
                    new = updated_entry(
                        entry, update, create, clock=self.clock, wall_clock=self.wall_clock
                    )
                    assert new is not None  # an entry, or ``create`` given (returned above)
                    pipe.multi()
                    pipe.hset(name, mapping={**self._encode(key, new), "n": uuid.uuid4().hex})
                    pipe.pexpire(name, self.ttl_ms)  # the TTL runs from the last write
                    if entry is None:
                        pipe.hset(name, mapping={"s": "0", "x": "0"})
                    await pipe.execute()
                    break
                except WatchError:
                    continue  # another worker wrote meanwhile: apply the update to its value
        await self._changed(r, key)

    @staticmethod
    def _key_json(key: Key) -> str:
        """``key`` as the change feed carries it (see :meth:`_listen`)."""
        return json.dumps(list(key), separators=(",", ":"))

    async def _changed(self, r: Any, key: Key) -> None:
        """Tell every worker (this one too, through Redis) that ``key``'s data was written."""
        await r.publish(self._changes, self._key_json(key))

    async def on_change(self, listener: ChangeListener) -> Callable[[], None]:
        await self._connection()  # listening before this returns
        return self._listeners.add(listener)

    async def invalidate(self, prefix: Key) -> int:
        conn = await self._connection()
        ahead = _READ_AHEAD.get()
        if ahead is not None and ahead.answer and ahead.answer[0] in ("same", "fresh"):
            ahead.answer = None  # read before this invalidation: no longer to be served
        return int(await conn.script(_INVALIDATE)(keys=[self._name(_INDEX, prefix)], args=["1"]))

    async def size(self, prefix: Key = ()) -> int:
        conn = await self._connection()
        return int(await conn.script(_INVALIDATE)(keys=[self._name(_INDEX, prefix)], args=["0"]))

    async def clear(self) -> None:
        r = await self._redis()
        names = [name async for name in r.scan_iter(match=f"{self.namespace}:*", count=1000)]
        if names:
            await r.delete(*names)

    async def aclose(self) -> None:
        """Close this loop's connection and listener, and cancel its fetches."""
        loop = asyncio.get_running_loop()
        for task in [t for t in self._tasks if t.get_loop() is loop]:
            task.cancel()
        conn = self._connections.pop(loop, None)
        if conn is None:
            return
        if conn.listener is not None:
            conn.listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await conn.listener
        await conn.client.aclose()
