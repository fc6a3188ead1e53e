"""The stages of one attempt at a task: fetch the source, probe it, make the clips, and
upload each part's clips as soon as they are made (so the scratch disk holds one part's
clips at a time), announcing them at once on ``task-events``: the notifier records each
clip as it comes, and a later attempt makes only the parts no earlier one recorded.

A task of at least ``FANOUT_MIN_PARTS`` parts is not made here: the attempt plans it,
stores each part's segment and hands the parts to the fleet (:meth:`AttemptStages.fan_out`);
:meth:`AttemptStages.run_part` is the stage of one such part, on whichever worker it
reaches (docs/transcoder.md, "Parts across the fleet")."""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from tempfile import TemporaryDirectory

from google.api_core.exceptions import GoogleAPIError
from google.cloud import storage

from services.transcoder.decisions import FannedOut, whole_parts
from services.transcoder.errors import PermanentFailure, TransientFailure
from services.transcoder.fetch import FetchPolicy, Resolver, UrlFetcher, fetch_upload
from services.transcoder.outputs import ClipStore, storage_errors
from services.transcoder.pipeline import (
    DEFAULT_LOGO,
    ProgressThrottle,
    draw_cards,
    iter_clips,
    make_part,
    plan_task,
)
from services.transcoder.plan import Part, clip_formats
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.reports import StatusReporter
from services.transcoder.retries import RetryPolicy
from services.transcoder.runner import StopSignal
from services.transcoder.segments import Segment, can_segment, cut_segment, source_origin
from shared import layout
from shared.config import Settings
from shared.events import ClipOutput, PartSubmitted, TaskSubmitted
from shared.lifecycle import TaskStatus
from shared.logging import task_logger
from shared.storage import gs_uri

log = task_logger(__name__)

PUBLISH_TIMEOUT_SECONDS = 60.0


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
        self,
        task: TaskSubmitted,
        attempt: int,
        stop: StopSignal,
        made: list[ClipOutput],
        *,
        handed_out: bool = False,
    ) -> tuple[ClipOutput, ...] | FannedOut:
        """Every stage, in a scratch folder that goes whatever happens; every clip's
        outputs, or the parts handed to the fleet. ``made`` holds the clips already
        recorded (their parts are not made again) and receives each part's clips as they
        are announced. ``handed_out``: an earlier run handed the task's parts out, and
        this one hands out again the parts not made, every one of them to the fleet."""
        with TemporaryDirectory(prefix=f"task-{task.task_id}-", dir=self.settings.scratch_dir) as scratch:
            workdir = Path(scratch)
            source = workdir / "source"
            self.retry.transient(lambda: self.fetch_source(task.source, source, stop), stop=stop)
            stop.raise_if_set()
            info = probe_source(source, self.limits, timeout=self.settings.probe_timeout_seconds)
            parts = plan_task(
                source, info, task.spec, ffmpeg_timeout=self.settings.ffmpeg_timeout_seconds, stop=stop
            )
            fan_out = self.settings.fanout_min_parts
            if fan_out and len(parts) >= fan_out and can_segment(info):
                whole = _keep_whole_parts(made, clip_formats(task.spec))
                if handed_out or parts[0].index in whole:
                    handed = self.fan_out(task, attempt, source, info, parts, workdir, stop, made)
                else:
                    handed = self.fan_out_beside_the_first(
                        task, attempt, source, info, parts, workdir, stop, made
                    )
                if isinstance(handed, FannedOut | tuple):
                    return handed
            return self.make_and_upload_clips(task, attempt, source, info, workdir, stop, made, parts)

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
        parts: list[Part] | None = None,
        *,
        skip: AbstractSet[int] = frozenset(),
    ) -> tuple[ClipOutput, ...]:
        """One ffmpeg run per part not made yet (nor in ``skip``); each format's clip,
        poster and preview uploaded (retried in place) and removed from scratch before the
        next part, the part's clips announced with the progress as soon as all its formats
        are stored."""
        formats = clip_formats(task.spec)
        whole = _keep_whole_parts(made, formats) | skip
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
            parts=parts,
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

    # --- a task made across the fleet ------------------------------------------------------

    def cut_segments(
        self, source: Path, info: SourceInfo, parts: list[Part], workdir: Path, stop: StopSignal
    ) -> list[Segment] | None:
        """Every part's segment, cut from the source in ``workdir``; None (logged) when
        one cannot be cut, and the task is then made here from the whole source."""
        timeout = self.settings.ffmpeg_timeout_seconds
        if not parts:
            return []
        origin = source_origin(source, info, timeout=timeout)
        segments: list[Segment] = []
        try:
            for part in parts:
                stop.raise_if_set()
                segments.append(
                    cut_segment(source, info, part, workdir, origin=origin, timeout=timeout, stop=stop)
                )
        except PermanentFailure as failure:
            log.warning("the task is made here, from the whole source: %s", failure.reason)
            for segment in segments:
                segment.path.unlink(missing_ok=True)
            return None
        return segments

    def fan_out_beside_the_first(
        self,
        task: TaskSubmitted,
        attempt: int,
        source: Path,
        info: SourceInfo,
        parts: list[Part],
        workdir: Path,
        stop: StopSignal,
        made: list[ClipOutput],
    ) -> tuple[ClipOutput, ...] | FannedOut | None:
        """Make the first part here, from the source this worker already holds, while a
        thread cuts, stores and hands out the others: the first clip comes one part's
        time after the fetch, not after the split too, and the fleet gets the other parts
        as soon as without it. The first part is handed out ``in_place`` before it is
        made, so the notifier counts it as one of the owner's units.

        The parts handed out, with the first made (:class:`FannedOut`, ``in_place``);
        None when a segment cannot be cut (the first part is made, and the task is then
        made here). A transient failure of the first part, once the others are handed
        out, hands the first out too, to be tried again as any part is, within its own
        attempts (its run here was its first). Any other failure of the first part waits
        for the hand-out to end, then fails or hands back the task; a failure of the
        hand-out, the first part made, hands the task back, and its next delivery hands
        out the parts not made."""
        first = parts[0]
        self._hand_out([self._part_submitted(task, first, len(parts), in_place=True)])
        # Its first attempt as a part, announced as any part's is (by the worker making it).
        self.reporter.publish(task.task_id, TaskStatus.PROCESSING, 1, part=first.index)
        others = {part.index for part in parts[1:]}
        with ThreadPoolExecutor(1, thread_name_prefix="hand-out") as pool:
            # In a copy of this context, so the thread's log lines name the task too.
            handing = pool.submit(
                contextvars.copy_context().run,
                functools.partial(self.fan_out, leave={first.index}),
                task,
                attempt,
                source,
                info,
                parts,
                workdir,
                stop,
                list(made),
            )
            # Leaving the block, by a failure too, waits for the hand-out to end.
            failed: TransientFailure | None = None
            try:
                self.make_and_upload_clips(
                    task, attempt, source, info, workdir, stop, made, parts, skip=others
                )
            except PermanentFailure as failure:
                raise PermanentFailure(f"part {first.index}: {failure.reason}") from failure
            except TransientFailure as failure:
                failed = failure
            handed = handing.result()
        if handed is None:
            if failed is not None:
                raise failed
            return None
        parts_handed = handed.parts if isinstance(handed, FannedOut) else 0
        if failed is None:
            return FannedOut(parts_handed, in_place=first.index, parts_total=len(parts))
        log.warning("part %d failed here (%s): it goes to the fleet", first.index, failed.reason)
        again = self.fan_out(task, attempt, source, info, parts, workdir, stop, made, leave=others)
        if not isinstance(again, FannedOut) or not again.parts:
            raise failed
        return FannedOut(parts_handed + again.parts, parts_total=len(parts))

    def fan_out(
        self,
        task: TaskSubmitted,
        attempt: int,
        source: Path,
        info: SourceInfo,
        parts: list[Part],
        workdir: Path,
        stop: StopSignal,
        made: list[ClipOutput],
        *,
        leave: AbstractSet[int] = frozenset(),
    ) -> tuple[ClipOutput, ...] | FannedOut | None:
        """Cut and store the segment of every part no earlier attempt recorded (nor in
        ``leave``: made here) and publish a ``PartSubmitted`` for each; the clips
        themselves when every part is recorded, None when a segment cannot be cut (the
        task is then made here)."""
        whole = _keep_whole_parts(made, clip_formats(task.spec))
        started = time.monotonic()
        segments = self.cut_segments(
            source, info, [part for part in parts if part.index not in whole | leave], workdir, stop
        )
        cut = time.monotonic() - started
        if segments is None:
            return None
        if not leave:
            self.reporter.publish(task.task_id, TaskStatus.PROCESSING, attempt, clips_total=len(parts))
        handed: list[PartSubmitted] = []
        for segment in segments:
            part = segment.part
            stop.raise_if_set()
            self.retry.transient(
                functools.partial(self.clips.store_segment, task.task_id, part.index, segment.path), stop=stop
            )
            segment.path.unlink()
            handed.append(self._part_submitted(task, part, len(parts), seek_to=segment.seek_to))
        if not handed:
            if leave:
                return FannedOut(0)
            return tuple(sorted(made, key=lambda output: (output.index, output.format)))
        self._hand_out(handed)
        # The split step's cost (make bench-e2e reads this line).
        log.info(
            "%d of %d parts handed to the fleet in %.2f s (cutting %.2f s)",
            len(handed),
            len(parts),
            time.monotonic() - started,
            cut,
            extra={"split_seconds": round(time.monotonic() - started, 3), "cut_seconds": round(cut, 3)},
        )
        return FannedOut(len(handed))

    def _part_submitted(
        self,
        task: TaskSubmitted,
        part: Part,
        parts_total: int,
        *,
        seek_to: float = 0.0,
        in_place: bool = False,
    ) -> PartSubmitted:
        return PartSubmitted(
            task_id=task.task_id,
            owner_id=task.owner_id,
            index=part.index,
            start=part.start,
            duration=part.duration,
            seek_to=seek_to,
            segment=gs_uri(self.clips.bucket, layout.segment_object(task.task_id, part.index)),
            parts_total=parts_total,
            spec=task.spec,
            in_place=in_place,
        )

    def _hand_out(self, parts: list[PartSubmitted]) -> None:
        """Publish the parts to the notifier, which records each (a copy of the task that
        comes again then hands them out again without a new attempt) and lets it out to
        the fleet when the task's owner has room; TransientFailure if a publish fails:
        the task's message comes back, and its next run hands the parts out again."""
        publisher = self.reporter.publisher
        futures = [publisher.publish(self.settings.topic_task_events, event) for event in parts]
        try:
            for future in futures:
                future.result(PUBLISH_TIMEOUT_SECONDS)
        except (GoogleAPIError, FutureTimeout) as exc:
            raise TransientFailure(f"handing the parts to the fleet failed ({type(exc).__name__})") from exc

    def run_part(
        self, part: PartSubmitted, stop: StopSignal, announce: Callable[[tuple[ClipOutput, ...]], object]
    ) -> tuple[ClipOutput, ...]:
        """Make one part of a task made across the fleet from its stored segment, upload
        its clips and ``announce`` them; every format's clip."""
        expected = gs_uri(self.clips.bucket, layout.segment_object(part.task_id, part.index))
        if part.segment != expected:
            raise PermanentFailure(f"part {part.index} names a segment that is not its own")
        prefix = f"task-{part.task_id}-part-{part.index:02d}-"
        with TemporaryDirectory(prefix=prefix, dir=self.settings.scratch_dir) as scratch:
            workdir = Path(scratch)
            segment = workdir / "segment.mkv"
            self.retry.transient(
                lambda: fetch_upload(
                    self.storage,
                    part.segment,
                    segment,
                    bucket=self.clips.bucket,
                    max_bytes=self.settings.max_source_bytes,
                    what="part's segment",
                    client_retry=False,
                ),
                stop=stop,
            )
            stop.raise_if_set()
            info = probe_source(segment, self.limits, timeout=self.settings.probe_timeout_seconds)
            made = make_part(
                segment,
                info,
                Part(part.index, part.start, part.duration),
                part.spec,
                workdir=workdir,
                cards=draw_cards(part.spec, self.logo, workdir, self.card_font),
                ffmpeg_timeout=self.settings.ffmpeg_timeout_seconds,
                stop=stop,
                seek_to=part.seek_to,
            )
            outputs = tuple(
                self.retry.transient(functools.partial(self.clips.upload, part.task_id, clip), stop=stop)
                for clip in made
            )
            # Announced even if the task was settled meanwhile: the notifier then deletes
            # the objects as a late event's, so none is left behind.
            announce(outputs)
            return outputs


def _keep_whole_parts(made: list[ClipOutput], formats: AbstractSet[str]) -> set[int]:
    """The parts ``made`` holds in every format; ``made`` keeps only their clips (a part
    recorded in only some of its formats is made again, in all of them)."""
    whole = whole_parts(made, formats)
    made[:] = [output for output in made if output.index in whole]
    return whole
