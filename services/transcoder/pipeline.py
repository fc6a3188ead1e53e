"""The clip pipeline: a probed local source in, one clip and poster per part out.

One ffmpeg run per clip (:mod:`.graph`), under the decoder and memory limits the source
was probed with (``info.decode``); clips are yielded as they are made, so the
worker uploads each before the next starts and the scratch disk holds one clip at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import build_clip_command
from services.transcoder.plan import Part, plan_parts, plan_scene_parts
from services.transcoder.probe import SourceInfo, run_ffprobe
from services.transcoder.runner import StopSignal, run_ffmpeg
from services.transcoder.scenes import detect_cuts
from shared.events import ClipSpec

DEFAULT_LOGO = Path(__file__).with_name("assets") / "logo.png"

# A clip may come out shorter than planned by this much before the source is judged
# damaged (a truncated file decodes to fewer frames than its header promises).
_SHORT_CLIP_TOLERANCE = 0.5


@dataclass(frozen=True)
class LocalClip:
    part: Part
    path: Path
    poster_path: Path
    duration_seconds: float
    size_bytes: int


class ProgressThrottle:
    """Passes a task's progress on at most once per ``interval`` seconds, only when it
    grew, and neither 0 (the processing event's) nor 100 (the processed event's)."""

    def __init__(
        self,
        emit: Callable[[int], object],
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._emit = emit
        self._interval = interval
        self._clock = clock
        self._last_time: float | None = None
        self._last_percent = 0

    def __call__(self, percent: float) -> None:
        value = max(0, min(99, int(percent)))
        now = self._clock()
        if value <= self._last_percent:
            return
        if self._last_time is not None and now - self._last_time < self._interval:
            return
        self._last_time, self._last_percent = now, value
        self._emit(value)


def iter_clips(
    source: Path,
    info: SourceInfo,
    spec: ClipSpec,
    *,
    workdir: Path,
    logo: Path = DEFAULT_LOGO,
    ffmpeg_timeout: float,
    stop: StopSignal | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> Iterator[LocalClip]:
    """Make the clips of ``source`` in ``workdir``, one ffmpeg run each, and yield each
    as it is done. ``on_progress`` receives the task's percentage (0-100, unthrottled;
    wrap it in :class:`ProgressThrottle`)."""
    # The whole task's plan is made before its first part, scene cuts searched only
    # where a boundary may move to (docs/transcoder.md, "Scene-aware parts").
    if spec.split == "scenes":

        def find_cuts(start: float, seconds: float) -> tuple[float, ...]:
            return detect_cuts(source, info, timeout=ffmpeg_timeout, stop=stop, start=start, seconds=seconds)

        parts = plan_scene_parts(info.duration, spec, find_cuts)
    else:
        parts = plan_parts(info.duration, spec)
    planned = [part.duration + 2 * spec.card_seconds for part in parts]
    total = sum(planned)
    done = 0.0
    for part, seconds in zip(parts, planned):
        if stop is not None:
            stop.raise_if_set()
        command = build_clip_command(
            source,
            info,
            part,
            spec,
            logo,
            clip_path=workdir / f"part-{part.index:02d}.mp4",
            poster_path=workdir / f"part-{part.index:02d}.jpg",
        )

        def report(written: float, before: float = done, length: float = seconds) -> None:
            if on_progress is not None:
                on_progress(100 * (before + min(written, length)) / total)

        run_ffmpeg(
            command.args,
            timeout=ffmpeg_timeout,
            limits=info.decode,
            on_progress=report,
            stop=stop,
        )
        duration = _clip_duration(command.clip_path, info)
        if duration < command.expected_seconds - _SHORT_CLIP_TOLERANCE:
            raise PermanentFailure(
                f"the source is damaged: part {part.index} gave {duration:.1f} s of video "
                f"where {part.duration:.1f} s were expected"
            )
        if not command.poster_path.is_file():
            raise PermanentFailure(f"no poster frame could be taken from part {part.index}")
        done += seconds
        yield LocalClip(
            part=part,
            path=command.clip_path,
            poster_path=command.poster_path,
            duration_seconds=round(duration, 3),
            size_bytes=command.clip_path.stat().st_size,
        )


def _clip_duration(path: Path, info: SourceInfo) -> float:
    probe = run_ffprobe(path, timeout=60, decode=info.decode)
    try:
        return float(probe["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        raise PermanentFailure("a clip came out without a duration") from None
