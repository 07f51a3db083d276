"""Serve either the local billing server or a bare Starlette endpoint on a chosen uvicorn stack:
the two sides of the HTTP-ceiling benchmark, started the same way.

    python -m bench._stack server --http h11 --loop asyncio <billing_ui.server options>
    python -m bench._stack bare --http httptools --loop uvloop --answer ANSWER.json

``server`` runs ``python -m billing_ui.server`` itself (its own ``main``), with uvicorn told
which HTTP parser (the server's own protocol with its slow-client deadlines, of that flavour)
and event loop to use. ``bare`` is the ceiling: one Starlette route on
``POST /v1/usage/track`` that reads and parses the JSON body (the same bytes the server gets)
and answers with a recorded answer of the server (the same bytes the server sends).
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from billing_ui.server.slow_requests import protocol_with_deadlines


def bare_app(answer: bytes) -> Starlette:
    async def track(request: Request) -> Response:
        json.loads(await request.body())
        return Response(answer, media_type="application/json")

    return Starlette(routes=[Route("/v1/usage/track", track, methods=["POST"])])


_UVICORN_RUN = uvicorn.run  # before main() puts _run_on_stack in its place


def _run_on_stack(parser: str, event_loop: str, app: object, **config: object) -> None:
    """``uvicorn.run`` for the server, on the chosen loop and parser: the server's own
    protocol (:func:`protocol_with_deadlines`, its slow-client deadlines included) of the
    chosen flavour, since the server's ``http`` config would otherwise win over ours."""
    config["http"] = protocol_with_deadlines(flavour=parser)
    _UVICORN_RUN(app, loop=event_loop, **config)  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("side", choices=["server", "bare"])
    parser.add_argument("--http", default="h11", choices=["h11", "httptools"])
    parser.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    parser.add_argument("--answer", type=Path, help="bare: the bytes to answer with")
    args, rest = parser.parse_known_args()  # server: the rest is for python -m billing_ui.server
    if args.side == "bare":
        uvicorn.run(
            bare_app(args.answer.read_bytes()), host="127.0.0.1", port=0, http=args.http,
            loop=args.loop, access_log=False, log_level="info",
        )  # fmt: skip
        return
    from billing_ui.server import __main__ as server

    server.uvicorn.run = functools.partial(_run_on_stack, args.http, args.loop)  # type: ignore[attr-defined]
    raise SystemExit(server.main([a for a in rest if a != "--"]))


if __name__ == "__main__":
    main()
