"""Task statuses and the rule that a task only ever moves forward.

``queued -> processing -> processed | failed | canceled``; the last three are final.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    QUEUED = "queued"
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({TaskStatus.PROCESSED, TaskStatus.FAILED, TaskStatus.CANCELED})
ACTIVE_STATUSES = frozenset({TaskStatus.QUEUED, TaskStatus.PROCESSING})

_RANK = {TaskStatus.QUEUED: 0, TaskStatus.PROCESSING: 1}


def moves_forward(current: TaskStatus, new: TaskStatus) -> bool:
    """Whether a task in ``current`` may take ``new``: never out of a final status,
    never back. ``processing -> processing`` is forward (a progress or a new attempt);
    the caller decides whether the event itself is newer."""
    if current.is_final:
        return False
    if new.is_final:
        return True
    return _RANK[new] >= _RANK[current]
