"""Group commit: concurrent one-event tracks written in one transaction.

A one-event track is the request an app sends most, and alone each one pays a whole write
transaction: ``BEGIN IMMEDIATE``, the customer's lookup, the idempotency claim, the
aggregate read, three writes, ``COMMIT`` (and, with SQLite's default ``synchronous=FULL``
or on PostgreSQL, a flush to disk before the answer may go out). Grouped, these are paid
once per group (figures: the commit that added this module, and ``bench/http_ceiling.py``).

:class:`GroupCommit` queues the tracks of one process's requests and one writer task
writes whatever is queued in one transaction (:meth:`BillingService.record_group`, the batch
path's bulk write), then answers each request. No timer: the writer runs as soon as the event
loop gets to it, so a lone request waits for nothing, and requests that arrive while a group
is being written (its fsync or round trip happens in a worker thread) form the next group.
Before it writes, the writer lets the loop turn while each turn queues more tracks (at most
:data:`GATHER_TURNS` turns): a loop turn reads the requests that have arrived on other
connections meanwhile, and a group's fixed cost (``BEGIN``, the lookups, ``COMMIT``, the
writer task) is most of a small group's, so fewer, larger groups cost less CPU per track. A
lone track waits one loop turn (microseconds; still no timer).

What each request is promised does not change:

* No answer before it is durable: a request's future is resolved only after the group's
  ``COMMIT`` returned.
* Each event is decided as if alone and in order, inside the write (hard limits, idempotency
  keys: a key seen earlier in the same group replays that event's answer).
* A refused event (over its hard limit, unknown customer or feature) is refused alone; the
  others of its group are recorded. Should the group's transaction itself fail, each event
  is retried in a transaction of its own, so an error reaches only the requests it belongs
  to; except when the database was busy (another process held its write lock past the busy
  timeout): that is no event's fault, so every request of the group gets the retryable 503
  at once instead of each waiting out the timeout again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from starlette.concurrency import run_in_threadpool

from billing_ui.server.errors import ApiProblem
from billing_ui.server.service import BillingService, TrackCommand, Tracked
from billing_ui.server.store import StoreBusyError

MAX_GROUP: Final = 1000
"""Events per transaction at most (as many as a batch request may carry)."""
MAX_INLINE: Final = 64
"""A group this small is written on the event loop when the store can do it without waiting
(SQLite, ``synchronous=NORMAL``, write lock free: cheaper than the hop to a worker thread);
a larger one goes to a worker thread so that the loop is never held up long."""

GATHER_TURNS: Final = 4
"""Loop turns the writer lets pass at most, while each brings more tracks, before it writes
(on bench/http_ceiling.py's 8 connections: a mean group of 4.9 tracks without, 7.2 with)."""

log = logging.getLogger("billing_ui.server")

Answer = dict[str, Any] | ApiProblem
T = TypeVar("T")


class GroupCommit:
    """The one-event tracks of one process, written in groups. Used from the event loop."""

    def __init__(self, service: BillingService) -> None:
        self.service = service
        self._queue: list[tuple[TrackCommand, asyncio.Future[Answer]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._writing: list[tuple[TrackCommand, asyncio.Future[Answer]]] = []
        self.groups = 0
        """Transactions written so far (with :attr:`events`: the mean group size)."""
        self.events = 0
        self.write_cpu_s = 0.0
        """CPU seconds the writes took (the thread's own CPU time around each group's write,
        on the loop or in a worker thread): what the durable write costs inside the serving
        process, where the rest of the request's work leaves the CPU's caches cold for it
        (``bench/http_ceiling.py`` reads it through ``/metrics``)."""

    async def record(self, cmd: TrackCommand, rate_headers: dict[str, str]) -> Tracked:
        """Record one admitted event with whatever else is queued; its answer once
        committed, or raise its refusal."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queue.append((cmd, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_queued())
            self._writer.add_done_callback(self._writer_done)
        answer = await future
        if isinstance(answer, ApiProblem):
            raise answer
        return Tracked(answer, rate_headers)

    async def _write_queued(self) -> None:
        await self._gather()
        while self._queue:
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            self._writing = group
            await self._write([cmd for cmd, _ in group], [f for _, f in group])
            self._writing = []
        self._writer = None  # at once (no await since the queue was seen empty)

    async def _gather(self) -> None:
        """Let the loop turn while each turn queues more tracks (the requests that arrived
        meanwhile on other connections), at most :data:`GATHER_TURNS` times and while the
        group is small enough to be written on the loop."""
        seen = 0
        for _ in range(GATHER_TURNS):
            if len(self._queue) == seen or len(self._queue) >= MAX_INLINE:
                return
            seen = len(self._queue)
            await asyncio.sleep(0)

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        """The writer ended: the queue is empty, or the writer was cancelled or failed (its
        loop going away at shutdown, even before its first step). Then no request may be
        left waiting, nor any future of that loop stay queued for a later loop's writer."""
        if self._writer is task:
            self._writer = None
        if task.cancelled() or task.exception() is not None:
            for _, future in [*self._writing, *self._queue]:
                future.cancel()
            self._writing, self._queue = [], []

    def _timed(
        self, write: Callable[[Sequence[TrackCommand]], T], cmds: Sequence[TrackCommand]
    ) -> T:
        """``write(cmds)``, its thread's CPU time added to :attr:`write_cpu_s` (a worker
        thread's too: ``+=`` on a float is not atomic, but the loop thread waits for the
        worker meanwhile, and only one group is written at a time)."""
        started = time.thread_time()
        try:
            return write(cmds)
        finally:
            self.write_cpu_s += time.thread_time() - started

    async def _write(
        self, cmds: Sequence[TrackCommand], futures: Sequence[asyncio.Future[Answer]]
    ) -> None:
        service = self.service
        try:
            answers = None
            if len(cmds) <= MAX_INLINE:
                answers = self._timed(service.record_group_now, cmds)
            if answers is None:
                answers = await run_in_threadpool(self._timed, service.record_group, cmds)
        except Exception as exc:  # the transaction failed (rolled back): nothing was written
            if len(cmds) == 1 or isinstance(exc, StoreBusyError):
                # Busy is the database's state, not any one event's: each event alone would
                # wait out the busy timeout again (64 events: 64 timeouts for the last one).
                # Every request gets the 503 now, and its client retries with its key.
                for future in futures:
                    if not future.done():
                        future.set_exception(exc)
                return
            log.warning("a group of %d tracks failed (%s): writing each alone", len(cmds), exc)
            for cmd, future in zip(cmds, futures, strict=True):
                await self._write([cmd], [future])
            return
        self.groups += 1
        self.events += len(cmds)
        for future, answer in zip(futures, answers, strict=True):
            if not future.done():  # its request may have been cancelled meanwhile
                future.set_result(answer)
