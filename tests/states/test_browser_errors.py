"""Browser error reports reach the log as one bounded, escaped line (issue 8, part 5).

The handler is called the way Reflex calls it (``frontend_exception_handler(Exception(text))``)
with the text a hostile socket can send; the demo app must have it installed.
"""

from __future__ import annotations

import logging

import pytest

from billing_ui.states.browser_errors import MAX_CHARS, log_browser_error


def logged(caplog: pytest.LogCaptureFixture, text: str) -> str:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="billing_ui.browser"):
        log_browser_error(Exception(text))
    (record,) = caplog.records
    return record.getMessage()


def test_a_huge_report_is_truncated_to_one_bounded_line(caplog):
    message = logged(caplog, "x" * 900_000)
    assert len(message) < MAX_CHARS + 200
    assert f"{900_000 - MAX_CHARS} more characters not logged" in message


def test_a_forged_log_line_stays_inside_the_report(caplog):
    message = logged(caplog, "TypeError: boom\nERROR:     billing server down\r\x1b[31mred")
    assert "\n" not in message and "\r" not in message and "\x1b" not in message
    assert message.endswith("TypeError: boom\\nERROR:     billing server down\\r\\x1b[31mred")


def test_the_demo_app_installs_the_handler(tmp_path, monkeypatch):
    import billing_ui.runtime
    from billing_ui.demo import config

    # Importing the demo configures the default runtime (its outbox comes with the backend's
    # lifespan, not at import: tests/test_demo_lazy_tracker.py); the next tests start from the
    # defaults again, as run_app does after an app.
    monkeypatch.setenv(config.ENV_OUTBOX, str(tmp_path / "outbox.db"))
    try:
        import billing_ui.billing_ui as demo

        assert demo.app.frontend_exception_handler is log_browser_error
    finally:
        config.close_tracker()
        billing_ui.runtime.install()
