"""A browser page on another origin calls the local billing server with ``fetch()``, as the
BillingOS React SDK does from an app's own origin: a JSON POST with ``Authorization`` makes
chromium send a CORS preflight (``OPTIONS``) first.

Real parts only: headless Debian chromium, a page served from a second loopback port, the real
server behind the fault proxy (forwarding only; it records what the browser sent, so the test
can see the preflight).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from selenium import webdriver
from selenium.webdriver.common.by import By

from billing_ui.server.options import CorsPolicy
from billing_ui.server.testing import create_customer, mint_session_token, running_server
from tests.faults import FaultProxy

from .browser import wait_for

PAGE = """<!doctype html><html><body><pre id="out">running</pre><script>
const q = new URLSearchParams(location.search);
const api = q.get("api"), auth = {"Authorization": "Bearer " + q.get("token")};
(async () => {
  const out = {};
  try {
    const tracked = await fetch(api + "/v1/features/track-usage", {
      method: "POST",
      headers: {...auth, "Content-Type": "application/json"},
      body: JSON.stringify({feature_key: "api_calls", quantity: 2}),
    });
    out.track = {status: tracked.status, body: await tracked.json()};
    const metrics = await fetch(api + "/v1/features/usage-metrics?feature_key=api_calls", {
      headers: auth,
    });
    out.metrics = {status: metrics.status, body: await metrics.json()};
  } catch (e) {
    out.error = String(e);
  }
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>"""


@contextmanager
def page_server() -> Iterator[str]:
    """Serve PAGE on a free loopback port (another origin than the billing server's)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = PAGE.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, name="page-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run_page(browser: webdriver.Chrome, origin: str, api: str, token: str) -> dict[str, Any]:
    browser.get(f"{origin}/?api={quote(api)}&token={quote(token)}")
    text = wait_for(
        lambda: (t := browser.find_element(By.ID, "out").text) != "running" and t,
        timeout=15,
        message=lambda: browser.page_source[:500],
    )
    result: dict[str, Any] = json.loads(text)
    return result


def test_cross_origin_fetch(browser: webdriver.Chrome, tmp_path: Path) -> None:
    with (
        running_server(db_path=tmp_path / "billing.db") as server,  # loopback: dev origins
        FaultProxy(server.base_url) as proxy,
        page_server() as origin,
    ):
        cid = create_customer(server, ["free"])
        out = run_page(browser, origin, proxy.url, mint_session_token(server, cid))
        assert "error" not in out, out
        track, metrics = out["track"], out["metrics"]
        assert (track["status"], track["body"]["quantity"]) == (200, 2)
        assert metrics["status"] == 200
        metrics = metrics["body"]["metrics"]
        assert [(m["feature_key"], m["consumed"]) for m in metrics] == [("api_calls", 2)]
        # The browser asked first: OPTIONS with its origin and the non-simple headers.
        seen = [(r.method, r.path) for r in proxy.seen("/v1/features/track-usage")]
        assert seen == [
            ("OPTIONS", "/v1/features/track-usage"),
            ("POST", "/v1/features/track-usage"),
        ]
        preflight = proxy.seen("/v1/features/track-usage")[0]
        assert preflight.headers["origin"] == origin
        asked = preflight.headers["access-control-request-headers"].lower()
        assert "authorization" in asked and "content-type" in asked
        assert server.count_events(cid, "api_calls") == 1


def test_without_an_allowed_origin_the_browser_refuses(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    with (
        running_server(db_path=tmp_path / "billing.db", cors=CorsPolicy()) as server,
        page_server() as origin,
    ):
        cid = create_customer(server, ["free"])
        out = run_page(browser, origin, server.base_url, mint_session_token(server, cid))
        assert "Failed to fetch" in str(out.get("error")), out
        assert server.count_events(cid, "api_calls") == 0  # the POST was never sent
