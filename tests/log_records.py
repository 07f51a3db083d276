"""A logging handler that keeps every record it is given, for tests that read what was logged
(what a logger said, at which level, with which attributes) rather than formatted text."""

from __future__ import annotations

import logging


class Records(logging.Handler):
    """Keeps the records it handles, in order, in ``records``; handles every level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
