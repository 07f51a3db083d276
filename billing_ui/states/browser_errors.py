"""Log what a browser reports about its own errors without letting it write the log.

Reflex hands every frontend error report to the app's ``frontend_exception_handler``. Its text
comes from the browser — any socket can send any text (a 900 KB "stack trace", or a newline
followed by a forged ``ERROR:`` line) — and Reflex's default handler logs it whole. This one
logs one line per report: truncated to ``MAX_CHARS`` characters and escaped, so newlines,
control characters and terminal escape sequences appear as ``\\n``, ``\\x1b``… and can never
start a line of their own. Install it in the app::

    from billing_ui.states.browser_errors import log_browser_error

    app = rx.App(frontend_exception_handler=log_browser_error)
"""

from __future__ import annotations

import logging

MAX_CHARS = 2000
"""Enough for a browser's error message and the top of its stack; no more."""

log = logging.getLogger("billing_ui.browser")


def escape_untrusted(text: str, limit: int = MAX_CHARS) -> str:
    """``text`` cut to ``limit`` characters and made one printable line (``\\n``, ``\\x1b``…),
    with how much was cut said at the end."""
    cut = text[:limit]
    escaped = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in cut)
    if len(text) > limit:
        escaped += f" …[{len(text) - limit} more characters not logged]"
    return escaped


def log_browser_error(exception: Exception) -> None:
    """A Reflex ``frontend_exception_handler``: one escaped, truncated WARNING line per report
    (a browser's report is untrusted input, not an error of this server)."""
    log.warning("browser error report (untrusted text): %s", escape_untrusted(str(exception)))
