"""Carrying out what the worker decided about a task or a part (``decisions.py``): ack,
hand back, cancel, or report an outcome and wait until the notifier recorded it."""

from __future__ import annotations

import uuid
from collections.abc import Collection

from google.cloud import pubsub_v1

from services.transcoder.claim import TaskClaim
from services.transcoder.decisions import Ack, Cancel, Drop, HandBack, Report
from services.transcoder.errors import ProcessingError
from services.transcoder.outputs import ClipStore
from services.transcoder.reports import StatusReporter
from services.transcoder.retries import RetryPolicy
from shared.config import Settings
from shared.events import ClipOutput
from shared.lifecycle import TaskStatus
from shared.logging import task_logger

log = task_logger(__name__)

PUBLISH_TIMEOUT_SECONDS = 60.0

Decision = Drop | Ack | HandBack | Cancel | Report


class Outcomes:
    """Acks, hands back, cancels and reports, for the task and the part handlers alike."""

    def __init__(
        self, settings: Settings, *, clips: ClipStore, reporter: StatusReporter, retry: RetryPolicy
    ) -> None:
        self.settings = settings
        self.clips = clips
        self.reporter = reporter
        self.retry = retry

    def carry_out(
        self,
        decision: Decision,
        task_id: uuid.UUID,
        message: pubsub_v1.subscriber.message.Message,
        claim: TaskClaim | None = None,
    ) -> None:
        match decision:
            case Drop(why):
                log.error("%s; dropping its message", why)
                message.ack()
            case Ack(why):
                log.info("%s; acking its message", why)
                message.ack()
            case HandBack(why):
                log.warning("%s; handing the task back", why)
                message.nack()
            case Cancel(attempt):
                deleted = self.delete_outputs(task_id)
                log.info("canceled: ffmpeg stopped, %d partial output(s) deleted", deleted)
                # Stale for the notifier (the api recorded the cancellation), kept for the record.
                self.reporter.publish(task_id, TaskStatus.CANCELED, attempt)
                message.ack()
            case Report():
                assert claim is not None, "an outcome is reported under the task's claim"
                self.report(task_id, decision, claim)
                message.ack()

    def report(self, task_id: uuid.UUID, report: Report, claim: TaskClaim) -> None:
        """Publish the outcome, then wait (bounded) until the notifier recorded it. Every
        object of the task that no clip of it names goes first: a part cut short, and the
        segments a task made across the fleet was made from."""
        kept = {*report.outputs, *claim.recorded_clips()}
        self.delete_outputs(task_id, keep={uri for clip in kept for uri in clip_objects(clip)})
        self.reporter.publish(
            task_id,
            report.status,
            report.attempt,
            progress=report.progress,
            outputs=report.outputs,
            failure_reason=report.failure_reason,
        ).result(PUBLISH_TIMEOUT_SECONDS)
        if not claim.wait_recorded(
            self.settings.outcome_confirm_seconds, every=min(0.2, self.settings.cancel_poll_seconds)
        ):
            log.warning("the outcome is not recorded yet; letting go of the task anyway")

    def delete_outputs(self, task_id: uuid.UUID, keep: Collection[str] = ()) -> int:
        """Delete the task's objects but ``keep``, retried in place. If storage still
        fails they stay (the api deletes them with the task): the outcome does not change."""
        try:
            return self.retry.transient(lambda: self.clips.delete_all(task_id, keep))
        except ProcessingError as failure:
            log.warning("partial outputs not deleted: %s", failure.reason)
            return 0


def clip_objects(clip: ClipOutput) -> list[str]:
    """The objects of one clip: the video, its poster and its preview."""
    return [uri for uri in (clip.uri, clip.poster_uri, clip.preview_uri) if uri]
