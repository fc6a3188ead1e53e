"""JSON-lines logging: one object per line with ``severity`` and ``message``.

Cloud Logging reads these fields from stdout. A line about a task carries ``task_id``:
code handling one task (a worker's attempt, the notifier's event, an api request for one
task) names it once with :func:`about_task`, and every line logged in that context, on
that thread or one started in a copy of its context, gets the field. A line that passes
``task_id`` itself (``extra={"task_id": ...}``) keeps its own.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else was passed through ``extra``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}

_current_task: ContextVar[str | None] = ContextVar("task_id", default=None)


class _TaskIdFilter(logging.Filter):
    """Puts the task named by :func:`about_task` on a record as ``task_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        task_id = _current_task.get()
        if task_id is not None and not hasattr(record, "task_id"):
            record.task_id = task_id
        return True


_TASK_ID = _TaskIdFilter()


@contextmanager
def about_task(task_id: object) -> Iterator[None]:
    """Tag the lines logged in this context while the block runs with ``task_id``."""
    token = _current_task.set(None if task_id is None else str(task_id))
    try:
        yield
    finally:
        _current_task.reset(token)


def current_task() -> str | None:
    """The task id :func:`about_task` set for this context (None outside one)."""
    return _current_task.get()


def task_logger(name: str) -> logging.Logger:
    """The logger ``name``, its records tagged with the task being handled (also where
    the process's JSON handler is not the one receiving them, as under pytest)."""
    logger = logging.getLogger(name)
    if _TASK_ID not in logger.filters:
        logger.addFilter(_TASK_ID)
    return logger


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "severity": record.levelname,
            "service": self.service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(service: str, level: str = "INFO") -> None:
    """Send every log line of this process to stdout as JSON, each line logged about a
    task tagged with its ``task_id`` whatever logger wrote it. Call once, at start."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(_TASK_ID)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
