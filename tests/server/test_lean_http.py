"""The lean forms of the track route's HTTP handling answer as the general forms they replace:
indexed request headers (``hot_route.IndexedHeaders``) as Starlette's ``Headers``, the
track's answer object (``app._RawJson``) as ``Response``, the short CORS way for requests
without ``Origin`` (``cors.Cors``) as Starlette's ``CORSMiddleware``, and the body read from
the ASGI messages as ``Request.stream()`` reads it (a chunked body over real HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from billing_ui.server.app import _RawJson
from billing_ui.server.cors import Cors
from billing_ui.server.hot_route import IndexedHeaders
from billing_ui.server.options import CORS_ALLOWED_HEADERS, CORS_METHODS, LOOPBACK_ORIGIN_REGEX
from billing_ui.server.testing import RunningServer

RAW = [
    (b"host", b"127.0.0.1"),
    (b"authorization", b"Bearer first"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer second"),
    (b"x-caf\xe9", b"caf\xe9"),
]


@pytest.mark.parametrize(
    "name", ["authorization", "Authorization", "CONTENT-TYPE", "x-caf\xe9", "missing", "host"]
)
def test_indexed_headers_answer_as_headers(name: str) -> None:
    indexed, plain = IndexedHeaders({"headers": RAW}), Headers(scope={"headers": list(RAW)})
    assert indexed.get(name) == plain.get(name)
    assert indexed.get(name, "default") == plain.get(name, "default")
    assert (name in indexed) == (name in plain)
    if name in plain:
        assert indexed[name] == plain[name]
    else:
        with pytest.raises(KeyError):
            indexed[name]
    assert indexed.getlist(name) == plain.getlist(name)
    assert indexed.raw == plain.raw


@pytest.mark.parametrize("headers", [None, {}, {"X-RateLimit-Limit": "60", "Retry-After": "3"}])
def test_raw_json_answer_has_the_headers_of_a_response(headers: dict[str, str] | None) -> None:
    body = b'{"success":true}'
    lean = _RawJson(body, headers)
    plain = Response(body, headers=headers, media_type="application/json")
    assert lean.raw_headers == plain.raw_headers
    assert (lean.status_code, lean.body, lean.background) == (200, body, None)


def _answering(headers: list[tuple[bytes, bytes]]) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _call(middleware: Any, request_headers: list[tuple[bytes, bytes]]) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": request_headers}
    asyncio.run(middleware(scope, receive, send))
    return sent


ANSWERS = [
    [],
    [(b"content-type", b"application/json")],
    [(b"vary", b"Accept"), (b"content-length", b"2")],
    [(b"vary", b"Accept"), (b"x", b"1"), (b"vary", b"Cookie"), (b"y", b"2")],
]
REQUESTS = [
    [(b"host", b"h")],
    [(b"host", b"h"), (b"origin", b"http://localhost:3000")],
    [(b"origin", b"https://elsewhere.example")],
]


@pytest.mark.parametrize("answer", ANSWERS)
@pytest.mark.parametrize("request_headers", REQUESTS)
def test_cors_answers_as_starlettes_middleware(
    answer: list[tuple[bytes, bytes]], request_headers: list[tuple[bytes, bytes]]
) -> None:
    options: dict[str, Any] = {
        "allow_origins": ["https://app.example.com"],
        "allow_origin_regex": LOOPBACK_ORIGIN_REGEX,
        "allow_methods": list(CORS_METHODS),
        "allow_headers": list(CORS_ALLOWED_HEADERS),
    }
    ours = _call(Cors(_answering(answer), **options), request_headers)
    theirs = _call(CORSMiddleware(_answering(answer), **options), request_headers)
    assert ours == theirs
    assert (b"vary", b"Origin") in ours[0]["headers"] or any(
        name == b"vary" and value.endswith(b", Origin") for name, value in ours[0]["headers"]
    )


def test_a_track_sent_in_chunks_is_read_whole(server: RunningServer, api, customer) -> None:
    cid = customer("pro")
    parts = [
        b'{"customer_id": "',
        cid.encode(),
        b'", "feature_key": "api_calls", ',
        b'"quantity": 2}',
    ]

    def chunks() -> Iterator[bytes]:
        yield from parts

    answer = api.post(
        "/v1/usage/track", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["consumed_units"] == 2
    assert answer.headers["vary"] == "Origin"
    assert answer.headers["x-request-id"].startswith("req_")
