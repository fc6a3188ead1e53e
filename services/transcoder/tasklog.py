"""The task id on every transcoder log line about a task, without passing it to each call.

The worker names the task it is handling with :func:`about_task` for the thread doing
the work; the thread that watches for a cancellation runs in a copy of that context. The
context variable and the filter live in ``shared.logging``, which the api and the
notifier use too; this module keeps the transcoder's names for them.
"""

from __future__ import annotations

from shared.logging import about_task, task_logger

__all__ = ["about_task", "task_logger"]
