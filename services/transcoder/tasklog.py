"""The task id on every transcoder log line about a task, without passing it to each call.

The worker names the task it is handling in a context variable (:func:`about_task`) for
the thread doing the work; the thread that watches for a cancellation runs in a copy of
that context. A filter on the transcoder's loggers puts the id on each of their records
as ``task_id``, the field ``shared.logging`` writes out. A line that names a task itself
keeps its own.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current_task: ContextVar[str | None] = ContextVar("transcoder_task_id", default=None)


class _TaskIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        task_id = _current_task.get()
        if task_id is not None and not hasattr(record, "task_id"):
            record.task_id = task_id
        return True


_TASK_ID = _TaskIdFilter()


def task_logger(name: str) -> logging.Logger:
    """The logger ``name``, its lines tagged with the task being handled."""
    logger = logging.getLogger(name)
    if _TASK_ID not in logger.filters:
        logger.addFilter(_TASK_ID)
    return logger


@contextmanager
def about_task(task_id: object) -> Iterator[None]:
    """Tag the lines logged in this context while the block runs with ``task_id``."""
    token = _current_task.set(None if task_id is None else str(task_id))
    try:
        yield
    finally:
        _current_task.reset(token)
