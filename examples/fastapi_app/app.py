"""A FastAPI app with usage billing in plain HTML + fetch: sign in, a usage page with a track
button, and a feature gate. Run it next to the local billing server:

    python -m billing_ui.server --port 8700 &          # seeds demo_pro, demo_free, …
    uvicorn examples.fastapi_app.app:app --port 8000   # then open http://127.0.0.1:8000
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from fastapi import Body, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse

from billing_ui.asgi import billing_routes
from billing_ui.core import AsyncUsageTracker, TrackRule

SECRET = os.environ.get("APP_SECRET") or secrets.token_hex(32)
USERS = {"ada": "demo_pro", "bob": "demo_free"}  # your users -> their billing customer ids
PAGE = (Path(__file__).parent / "page.html").read_text()


def sign(user: str) -> str:
    return user + "." + hmac.new(SECRET.encode(), user.encode(), hashlib.sha256).hexdigest()


def signed_in_customer(request: Request) -> str | None:
    """Your auth: the signed session cookie's user, as a billing customer id (None: nobody)."""
    cookie = request.cookies.get("session", "")
    user = cookie.rpartition(".")[0]
    return USERS.get(user) if hmac.compare_digest(cookie, sign(user)) else None


# Tracks the billing API cannot take right now wait in a durable outbox: nothing is lost.
tracker = AsyncUsageTracker(outbox_path=os.environ.get("OUTBOX_PATH", "example_outbox.db"))
app = FastAPI(lifespan=tracker.lifespan)  # flushes the outbox on shutdown
app.mount(
    "/billing",
    billing_routes(
        resolve_customer=signed_in_customer,
        trackable={"api_calls": TrackRule(max_quantity=5)},  # what the page may track
        tracker=tracker,
    ),
)


@app.get("/", response_class=HTMLResponse)
def page() -> str:
    return PAGE  # the page asks /billing for the signed-in user's data


@app.post("/session")
def sign_in(user: str = Body(embed=True)) -> JSONResponse:
    response = JSONResponse({"signed_in": user in USERS}, status_code=200 if user in USERS else 403)
    if user in USERS:
        response.set_cookie("session", sign(user), httponly=True, samesite="lax")
    return response


@app.delete("/session")
def sign_out() -> JSONResponse:
    response = JSONResponse({"signed_in": False})
    response.delete_cookie("session")
    return response
