"""The stages of one attempt at a task: fetch the source, probe it, make the clips, and
upload each part's clips as soon as they are made (so the scratch disk holds one part's
clips at a time), announcing them at once on ``task-events``: the notifier records each
clip as it comes, and a later attempt makes only the parts no earlier one recorded."""

from __future__ import annotations

import functools
from pathlib import Path
from tempfile import TemporaryDirectory

from google.cloud import storage

from services.transcoder.fetch import FetchPolicy, Resolver, UrlFetcher, fetch_upload
from services.transcoder.outputs import ClipStore, storage_errors
from services.transcoder.pipeline import DEFAULT_LOGO, ProgressThrottle, iter_clips
from services.transcoder.plan import clip_frames
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
            threads=settings.ffmpeg_threads,
        )
        self.logo = Path(settings.logo_path) if settings.logo_path else DEFAULT_LOGO
        self.card_font = Path(settings.card_font_path)

    def close(self) -> None:
        self.fetcher.close()

    def run(
        self, task: TaskSubmitted, attempt: int, stop: StopSignal, made: list[ClipOutput]
    ) -> tuple[ClipOutput, ...]:
        """Every stage, in a scratch folder that goes whatever happens; every clip's
        outputs. ``made`` holds the clips already recorded (their parts are not made
        again) and receives each part's clips as they are announced."""
        with TemporaryDirectory(prefix=f"task-{task.task_id}-", dir=self.settings.scratch_dir) as scratch:
            workdir = Path(scratch)
            source = workdir / "source"
            self.retry.transient(lambda: self.fetch_source(task.source, source, stop), stop=stop)
            stop.raise_if_set()
            info = probe_source(source, self.limits, timeout=self.settings.probe_timeout_seconds)
            return self.make_and_upload_clips(task, attempt, source, info, workdir, stop, made)

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
        made: list[ClipOutput],
    ) -> tuple[ClipOutput, ...]:
        """One ffmpeg run per part not made yet; each format's clip, poster and preview
        uploaded (retried in place) and removed from scratch before the next part, the
        part's clips announced with the progress as soon as all its formats are stored."""
        formats = {frame.format for frame in clip_frames(task.spec)}
        recorded: dict[int, set[str]] = {}
        for output in made:
            recorded.setdefault(output.index, set()).add(output.format)
        whole = {index for index, kinds in recorded.items() if formats <= kinds}
        # A part recorded in only some of its formats is made again, in all of them.
        made[:] = [output for output in made if output.index in whole]
        announce = functools.partial(self.reporter.publish, task.task_id, TaskStatus.PROCESSING, attempt)
        progress = ProgressThrottle(
            lambda percent: announce(progress=percent), self.settings.progress_interval_seconds
        )
        latest = {"percent": 0.0}

        def on_progress(percent: float) -> None:
            latest["percent"] = percent
            progress(percent)

        part: list[ClipOutput] = []
        for clip in iter_clips(
            source,
            info,
            task.spec,
            workdir=workdir,
            logo=self.logo,
            card_font=self.card_font,
            ffmpeg_timeout=self.settings.ffmpeg_timeout_seconds,
            stop=stop,
            on_progress=on_progress,
            on_plan=lambda count: announce(clips_total=count),
            skip=whole,
        ):
            part.append(
                self.retry.transient(functools.partial(self.clips.upload, task.task_id, clip), stop=stop)
            )
            clip.path.unlink()
            clip.poster_path.unlink()
            if clip.preview_path is not None:
                clip.preview_path.unlink()
            if len(part) == len(formats):
                # Not awaited: the processed event names every clip again.
                announce(progress=min(99, int(latest["percent"])), outputs=tuple(part))
                made.extend(part)
                part = []
            stop.raise_if_set()
        return tuple(sorted(made, key=lambda output: (output.index, output.format)))
