"""How processing a task can end other than with clips.

The worker maps each kind to what it does with the message: a permanent failure fails
the task at once, a transient one is retried (then fails the task once attempts run
out), and a stop (cancellation or drain) ends the run without an outcome of its own.
"""

from __future__ import annotations

import re

# ffmpeg prefixes a message with its context's name and memory address, and names files
# by their local path: neither is for the task's owner (nor for anyone outside the host).
_FFMPEG_CONTEXT = re.compile(r"\[[^\[\]@]*@ 0x[0-9a-fA-F]+\]\s*")
_LOCAL_PATH = re.compile(r"(?<![\w.:/])(?:file:)?(?:/[^/\s:;,'\"()\[\]]+)*/([^/\s:;,'\"()\[\]]+)")


def owner_detail(text: str) -> str:
    """ffmpeg's or ffprobe's words as a task's owner may read them: without the
    contexts' memory addresses, local paths cut to the file's own name."""
    return _LOCAL_PATH.sub(r"\1", _FFMPEG_CONTEXT.sub("", text))


class ProcessingError(Exception):
    """Processing a task failed; ``reason`` is what the task's owner is told."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentFailure(ProcessingError):
    """Retrying cannot help: a corrupt or over-limit source, a refused URL, a 404."""


class TransientFailure(ProcessingError):
    """Retrying may help: a network error, a storage or source 5xx, a timeout."""


class ProcessingStopped(Exception):
    """The run was stopped from outside (the task was canceled, or the worker drains)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why
