"""The last lines of the agent's log, for ``/api/v1/logs``."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any


class LogBuffer(logging.Handler):
    """Keeps the last ``size`` records of the ``openmos`` loggers."""

    def __init__(self, size: int = 500) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[dict[str, Any]] = deque(maxlen=size)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append({"time": record.created, "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})
