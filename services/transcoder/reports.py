"""A task's status changes as this worker publishes them on ``task-events``."""

from __future__ import annotations

import uuid
from concurrent.futures import Future

from shared.events import ClipOutput, TaskStatusChanged
from shared.lifecycle import TaskStatus
from shared.logging import task_logger
from shared.pubsub import Publisher

log = task_logger(__name__)


class StatusReporter:
    """Publishes ``TaskStatusChanged`` events signed with this worker's id."""

    def __init__(self, publisher: Publisher, topic: str, worker_id: str) -> None:
        self.publisher = publisher
        self.topic = topic
        self.worker_id = worker_id

    def publish(
        self,
        task_id: uuid.UUID,
        status: TaskStatus,
        attempt: int,
        *,
        progress: int = 0,
        outputs: tuple[ClipOutput, ...] = (),
        clips_total: int | None = None,
        failure_reason: str | None = None,
        part: int | None = None,
    ) -> Future:
        """Publish the change; the future's ``result()`` waits for Pub/Sub to take it.
        A failure is logged either way."""
        event = TaskStatusChanged(
            task_id=task_id,
            status=status,
            attempt=attempt,
            progress=progress,
            outputs=outputs,
            clips_total=clips_total,
            failure_reason=failure_reason,
            part=part,
            worker_id=self.worker_id,
        )
        future = self.publisher.publish(self.topic, event)
        # The callback runs on a Pub/Sub thread: the line names its task itself.
        extra = {"task_id": str(task_id), "status": str(status), "progress": progress, "part": part}

        def logged(done: Future) -> None:
            if done.exception() is not None:
                log.warning("publishing a status change failed: %s", done.exception(), extra=extra)

        future.add_done_callback(logged)
        return future
