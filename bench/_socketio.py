"""A raw socket.io client for a Reflex backend, on asyncio, for hundreds of sockets at once.

python-socketio's sync client (used by ``tests/e2e/test_hostile_client.py``) costs threads per
socket, and its asyncio client needs aiohttp, which billing_ui does not depend on. This speaks
just what a Reflex tab speaks — Engine.IO 4 over a WebSocket (``websockets``, installed with
``uvicorn[standard]``), the ``/_event`` namespace, ``event`` messages both ways — with payloads
no UI would send. Not a general socket.io client: no polling transport, no binary attachments.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any, Self

import websockets

NAMESPACE = "/_event"
_EVENT_PREFIX = f"42{NAMESPACE},"


def handler_name(handler: Any) -> str:
    """The wire name of a state's event handler (``State.handler``)."""
    return f"{handler.state_full_name}.{handler.fn.__name__}"


HYDRATE = "reflex___state____state.hydrate"
ON_LOAD = "reflex___state____state.reflex___state____on_load_internal_state.on_load_internal"
"""What the browser sends after a navigation: the backend runs the new page's ``on_load``."""


class Tab:
    """One browser tab's socket: emits events, records every update the backend sends."""

    def __init__(self, backend_url: str, token: str | None = None) -> None:
        self.url = backend_url.replace("http://", "ws://", 1).rstrip("/")
        self.token = token or str(uuid.uuid4())
        self.updates: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.path = "/"
        """The page this tab shows: every event carries it, as the browser's do."""

    async def __aenter__(self) -> Self:
        url = f"{self.url}{NAMESPACE}/?EIO=4&transport=websocket&token={self.token}"
        self._ws = await websockets.connect(url, max_size=None, open_timeout=30)
        opening = await self._ws.recv()
        if not str(opening).startswith("0"):
            raise ConnectionError(f"not an Engine.IO open packet: {opening!r}")
        await self._ws.send(f"40{NAMESPACE},")
        while not str(reply := await self._ws.recv()).startswith(f"40{NAMESPACE}"):
            if str(reply).startswith(f"44{NAMESPACE}"):
                raise ConnectionError(f"namespace refused: {reply!r}")
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self._ws is not None:
            await self._ws.close()

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                if message == "2":  # Engine.IO ping
                    await self._ws.send("3")
                elif isinstance(message, str) and message.startswith(_EVENT_PREFIX):
                    name, payload = json.loads(message[len(_EVENT_PREFIX) :])[:2]
                    if name == "event":
                        async with self._changed:
                            self.updates.append(payload)
                            self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass

    async def emit(self, name: str, payload: dict[str, Any] | None = None) -> None:
        """Send the event ``name`` (a handler's wire name) with ``payload`` as its arguments."""
        router_data = {"pathname": self.path, "asPath": self.path}
        event = {"name": name, "payload": payload or {}, "router_data": router_data}
        await self._ws.send(_EVENT_PREFIX + json.dumps(["event", event]))

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> float:
        """Wait until ``predicate()`` holds; the seconds it took. TimeoutError after ``timeout``."""
        started = time.monotonic()
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(predicate), timeout)
        return time.monotonic() - started

    async def hydrate(self, timeout: float = 30.0) -> float:
        """A full hydrate, as a tab does on load; the seconds until the backend answered."""
        seen = len(self.updates)
        await self.emit(HYDRATE)
        return await self.wait_for(lambda: any("delta" in u for u in self.updates[seen:]), timeout)

    async def navigate(self, path: str) -> None:
        """Go to the page ``path`` as the browser's router does: the backend runs its
        ``on_load`` handlers (a page's polling loop among them) until the socket closes."""
        self.path = path
        await self.emit(ON_LOAD)

    def state(self, state_cls: Any) -> dict[str, Any]:
        """``state_cls``'s vars as last sent to this tab (its deltas merged)."""
        key = state_cls.get_full_name()
        merged: dict[str, Any] = {}
        for update in self.updates:
            merged.update((update.get("delta") or {}).get(key) or {})
        return {k.removesuffix("_rx_state_"): v for k, v in merged.items()}

    def meters(self) -> list[dict[str, Any]]:
        """The meters as this tab last heard them, merged from their bucket vars in order, as
        the browser merges them (``UsageMetricsState.metrics``, a ``SplitList``)."""
        from billing_ui.states.metrics import METERS, UsageMetricsState

        shown = self.state(UsageMetricsState)
        return [m for bucket in METERS.buckets for m in (shown.get(bucket) or {}).values()]

    def meter_updates(self) -> int:
        """Updates that carried any of the meters (a poll tick, a live push)."""
        from billing_ui.states.metrics import METERS, UsageMetricsState

        key, vars_ = UsageMetricsState.get_full_name(), {b + "_rx_state_" for b in METERS.buckets}
        return sum(1 for u in self.updates if vars_ & set((u.get("delta") or {}).get(key) or {}))
