"""A loopback HTTP endpoint that answers each path with recorded bytes: the server half of the
peer-SDK benchmark, the same for every SDK.

    python -m bench._canned_endpoint ANSWERS.json

``ANSWERS.json`` maps ``"POST /path"`` to ``{"status": int, "body": str}``. Every request's
body is read in full (as a real server would) and the recorded answer returned as JSON; no
parsing, no storage, so the server costs every SDK the same and nothing else. Serves with
uvicorn on a free port (printed as "Uvicorn running on ...").
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def app(answers: dict[str, dict[str, object]]) -> Starlette:
    def endpoint(status: int, body: bytes):  # type: ignore[no-untyped-def]
        async def answer(request: Request) -> Response:
            await request.body()
            return Response(body, status_code=status, media_type="application/json")

        return answer

    routes = []
    for key, spec in answers.items():
        method, path = key.split(" ", 1)
        body = str(spec["body"]).encode()
        routes.append(Route(path, endpoint(int(spec["status"]), body), methods=[method]))  # type: ignore[call-overload]
    return Starlette(routes=routes)


if __name__ == "__main__":
    answers = json.loads(Path(sys.argv[1]).read_text())
    uvicorn.run(app(answers), host="127.0.0.1", port=0, log_level="info", access_log=False)
