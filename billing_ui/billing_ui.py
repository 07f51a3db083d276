"""The demo app's Reflex entry point (``rxconfig.py``: app_name ``billing_ui``).

Configuration comes from the environment at import (see :mod:`billing_ui.demo.config`):
without ``BILLINGOS_API_URL`` the embedded local billing server starts with the backend;
with it, the app talks to that API with ``BILLINGOS_SECRET_KEY``.
"""
# mypy: disable-error-code="attr-defined,no-any-return"
# (Reflex types fields of a Var[dataclass] and its component factories loosely.)

from __future__ import annotations

import reflex as rx

from billing_ui.demo import config, dashboard, embedded, playground, security, sign_in
from billing_ui.runtime import expose_metrics
from billing_ui.server_memory import release_closed_tabs
from billing_ui.states.browser_errors import log_browser_error

config.setup()

# The theme (Radix accent/gray/radius) is set in rxconfig.py's RadixThemesPlugin. Static files
# (favicon, logo) live in the repo's top-level assets/ folder, which Reflex serves at "/".
app = rx.App(
    toaster=rx.toast.provider(position="bottom-right"),
    head_components=[rx.el.link(rel="icon", href="/favicon.svg", type="image/svg+xml")],
    frontend_exception_handler=log_browser_error,  # browser text: truncated and escaped
)

if config.uses_embedded_server():
    app.register_lifespan_task(embedded.lifespan)
app.register_lifespan_task(config.tracker_lifespan)  # after the server it sends to
app.register_lifespan_task(release_closed_tabs)  # closed tabs' states: on disk, not in memory
if metrics_path := config.metrics_path():  # BILLING_UI_METRICS_PATH: opt in
    expose_metrics(app, metrics_path)

app.add_page(sign_in.page, route=sign_in.ROUTE, title=sign_in.TITLE)
for module in (dashboard, playground, security):
    app.add_page(module.page, route=module.ROUTE, title=module.TITLE, on_load=module.ON_LOAD)
