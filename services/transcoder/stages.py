"""The stages of one attempt at a task: fetch the source, probe it, make the clips, and
upload each as soon as it is made (so the scratch disk holds one clip at a time)."""

from __future__ import annotations

import functools
from pathlib import Path
from tempfile import TemporaryDirectory

from google.cloud import storage

from services.transcoder.fetch import FetchPolicy, Resolver, UrlFetcher, fetch_upload
from services.transcoder.outputs import ClipStore, storage_errors
from services.transcoder.pipeline import DEFAULT_LOGO, ProgressThrottle, iter_clips
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.reports import StatusReporter
from services.transcoder.retries import RetryPolicy
from services.transcoder.runner import StopSignal
from shared.config import Settings
from shared.events import ClipOutput, TaskSubmitted
from shared.lifecycle import TaskStatus


class AttemptStages:
    """Runs the stages of an attempt; a stage raises ``ProcessingStopped``,
    ``PermanentFailure`` or ``TransientFailure`` to end it early."""

    def __init__(
        self,
        settings: Settings,
        *,
        storage_client: storage.Client,
        clips: ClipStore,
        reporter: StatusReporter,
        retry: RetryPolicy,
        resolver: Resolver,
    ) -> None:
        self.settings = settings
        self.storage = storage_client
        self.clips = clips
        self.reporter = reporter
        self.retry = retry
        self.fetcher = UrlFetcher(
            FetchPolicy(
                allow_loopback=settings.allow_loopback_sources,
                max_bytes=settings.max_source_bytes,
                connect_timeout=settings.fetch_connect_timeout_seconds,
                read_timeout=settings.fetch_read_timeout_seconds,
                total_timeout=settings.fetch_total_timeout_seconds,
                min_bytes_per_second=settings.fetch_min_bytes_per_second,
                throughput_grace=settings.fetch_throughput_grace_seconds,
                max_redirects=settings.fetch_max_redirects,
            ),
            resolver=resolver,
        )
        self.limits = SourceLimits(
            max_bytes=settings.max_source_bytes,
            max_seconds=settings.max_source_seconds,
            max_width=settings.max_source_width,
            max_height=settings.max_source_height,
            max_memory_bytes=settings.ffmpeg_memory_limit_bytes,
        )
        self.logo = Path(settings.logo_path) if settings.logo_path else DEFAULT_LOGO
        self.card_font = Path(settings.card_font_path)

    def close(self) -> None:
        self.fetcher.close()

    def run(self, task: TaskSubmitted, attempt: int, stop: StopSignal) -> tuple[ClipOutput, ...]:
        """Every stage, in a scratch folder that goes whatever happens; the clips' outputs."""
        with TemporaryDirectory(prefix=f"task-{task.task_id}-", dir=self.settings.scratch_dir) as scratch:
            workdir = Path(scratch)
            source = workdir / "source"
            self.retry.transient(lambda: self.fetch_source(task.source, source, stop), stop=stop)
            stop.raise_if_set()
            info = probe_source(source, self.limits, timeout=self.settings.probe_timeout_seconds)
            return self.make_and_upload_clips(task, attempt, source, info, workdir, stop)

    def fetch_source(self, source: str, destination: Path, stop: StopSignal) -> int:
        """Download the task's source: an upload from the uploads bucket, or a URL (a
        set ``stop`` closes its connection)."""
        if source.startswith("gs://"):
            with storage_errors("reading the uploaded source"):
                return fetch_upload(
                    self.storage,
                    source,
                    destination,
                    bucket=self.settings.uploads_bucket,
                    max_bytes=self.settings.max_source_bytes,
                )
        return self.fetcher.fetch(source, destination, stop=stop)

    def make_and_upload_clips(
        self,
        task: TaskSubmitted,
        attempt: int,
        source: Path,
        info: SourceInfo,
        workdir: Path,
        stop: StopSignal,
    ) -> tuple[ClipOutput, ...]:
        """One ffmpeg run per part; each format's clip, poster and preview uploaded (retried in place) and
        removed from scratch before the next part, progress reported as it goes."""
        progress = ProgressThrottle(
            lambda percent: self.reporter.publish(
                task.task_id, TaskStatus.PROCESSING, attempt, progress=percent
            ),
            self.settings.progress_interval_seconds,
        )
        outputs = []
        for clip in iter_clips(
            source,
            info,
            task.spec,
            workdir=workdir,
            logo=self.logo,
            card_font=self.card_font,
            ffmpeg_timeout=self.settings.ffmpeg_timeout_seconds,
            stop=stop,
            on_progress=progress,
        ):
            outputs.append(
                self.retry.transient(functools.partial(self.clips.upload, task.task_id, clip), stop=stop)
            )
            clip.path.unlink()
            clip.poster_path.unlink()
            if clip.preview_path is not None:
                clip.preview_path.unlink()
            stop.raise_if_set()
        return tuple(outputs)
