"""The clip pipeline: a probed local source in, per part one clip, poster and preview
in every format of the spec out.

One ffmpeg run per part makes all its formats (:mod:`.graph`), preceded, when the spec
asks for a loudness, by an audio-only run measuring the part (:mod:`.loudness`), under the decoder and
memory limits the source was probed with (``info.decode``); clips are yielded as each
part is made, so the worker uploads them before the next part starts and the scratch disk
holds one part's clips at a time. A spec with card text has its cards drawn once, for
every frame size, before the first part (:mod:`.cards`). Each part after the first reads
its own segment of the source, cut just before it (:mod:`.segments`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from services.transcoder.cards import DEFAULT_CARD_FONT, card_images
from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import FormatFiles, build_part_command
from services.transcoder.loudness import loudnorm_arguments, measure_part
from services.transcoder.plan import Part, clip_frames, plan_parts, plan_scene_parts
from services.transcoder.probe import SourceInfo, run_ffprobe
from services.transcoder.runner import StopSignal, run_ffmpeg
from services.transcoder.scenes import detect_cuts
from services.transcoder.segments import Segment, can_segment, cut_segment, source_origin
from shared import layout
from shared.events import ClipFormat, ClipSpec

DEFAULT_LOGO = Path(__file__).with_name("assets") / "logo.png"

log = logging.getLogger(__name__)

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
    format: ClipFormat = "16:9"
    preview_path: Path | None = None


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
    card_font: Path = DEFAULT_CARD_FONT,
    ffmpeg_timeout: float,
    stop: StopSignal | None = None,
    on_progress: Callable[[float], None] | None = None,
    on_plan: Callable[[int], object] | None = None,
    skip: Collection[int] = (),
    parts: list[Part] | None = None,
) -> Iterator[LocalClip]:
    """Make the clips of ``source`` in ``workdir``, one ffmpeg run per part for all its
    formats, and yield each part's clips (one per format, in the spec's order) as the
    part is done. ``logo`` is the card of a spec without card text; with text, each
    frame's card is drawn in ``card_font`` into ``workdir`` first. ``on_progress``
    receives the task's percentage (0-100, unthrottled; wrap it in
    :class:`ProgressThrottle`), ``on_plan`` the number of parts once they are planned.
    Parts whose index is in ``skip`` (made by an earlier attempt) are not made again;
    ``parts`` is the plan when the caller made it already.

    A part after the first is made from its own segment where the source allows: the
    frames a run on the whole source gives where its demuxer seeks exactly, and the right
    ones where it does not (docs/transcoder.md, "Parts from their segments"). The first
    part has nothing before it to leave out, and reads the source itself."""
    if parts is None:
        parts = plan_task(source, info, spec, ffmpeg_timeout=ffmpeg_timeout, stop=stop)
    if on_plan is not None:
        on_plan(len(parts))
    planned = [part.duration + 2 * spec.card_seconds for part in parts]
    total = sum(planned)
    done = 0.0
    cards = draw_cards(spec, logo, workdir, card_font)
    origin: float | None = None
    for part, seconds in zip(parts, planned):
        if stop is not None:
            stop.raise_if_set()
        if part.index in skip:
            done += seconds
            continue

        def report(written: float, before: float = done, length: float = seconds) -> None:
            if on_progress is not None:
                on_progress(100 * (before + min(written, length)) / total)

        segment = None
        if part.start > 0 and can_segment(info):
            if origin is None:
                origin = source_origin(source, info, timeout=ffmpeg_timeout)
            segment = _cut_or_none(source, info, part, workdir, origin, ffmpeg_timeout, stop)
        try:
            clips = make_part(
                segment.path if segment else source,
                segment.info if segment else info,
                part,
                spec,
                workdir=workdir,
                cards=cards,
                ffmpeg_timeout=ffmpeg_timeout,
                stop=stop,
                on_progress=report,
                seek_to=segment.seek_to if segment else None,
            )
        finally:
            if segment is not None:
                segment.path.unlink(missing_ok=True)
        yield from clips
        done += seconds


def _cut_or_none(
    source: Path,
    info: SourceInfo,
    part: Part,
    workdir: Path,
    origin: float,
    timeout: float,
    stop: StopSignal | None,
) -> Segment | None:
    """``part``'s segment, or None (logged) when the source cannot be cut there: the
    part is then made from the whole source, whose run names any real fault."""
    try:
        return cut_segment(source, info, part, workdir, origin=origin, timeout=timeout, stop=stop)
    except PermanentFailure as failure:
        log.warning("part %d is made from the whole source: %s", part.index, failure.reason)
        return None


def plan_task(
    source: Path, info: SourceInfo, spec: ClipSpec, *, ffmpeg_timeout: float, stop: StopSignal | None = None
) -> list[Part]:
    """The parts of the whole task, planned before its first part is made (scene cuts
    searched only where a boundary may move to: docs/transcoder.md, "Scene-aware parts")."""
    if spec.split != "scenes":
        return plan_parts(info.duration, spec)

    def find_cuts(start: float, seconds: float) -> tuple[float, ...]:
        return detect_cuts(source, info, timeout=ffmpeg_timeout, stop=stop, start=start, seconds=seconds)

    return plan_scene_parts(info.duration, spec, find_cuts)


def draw_cards(
    spec: ClipSpec, logo: Path, workdir: Path, card_font: Path = DEFAULT_CARD_FONT
) -> dict[str, Path]:
    """Each frame's card, drawn for it into ``workdir`` (or the logo, without text)."""
    frames = clip_frames(spec)
    return card_images(
        spec.card, logo, {frame.format: (frame.width, frame.height) for frame in frames}, workdir, card_font
    )


def make_part(
    source: Path,
    info: SourceInfo,
    part: Part,
    spec: ClipSpec,
    *,
    workdir: Path,
    cards: dict[str, Path],
    ffmpeg_timeout: float,
    stop: StopSignal | None = None,
    on_progress: Callable[[float], None] | None = None,
    seek_to: float | None = None,
) -> list[LocalClip]:
    """One part's clips, one per format in the spec's order, from one ffmpeg run (after
    the loudness measuring run, when the spec asks for one). ``source`` is the whole
    source, or the part's segment with ``seek_to`` (:mod:`.segments`); ``on_progress``
    receives the seconds of the clip written so far."""
    loudnorm = None
    if spec.loudness is not None and info.has_audio:
        measurement = measure_part(
            source, info, part, spec, timeout=ffmpeg_timeout, stop=stop, seek_to=seek_to
        )
        loudnorm = loudnorm_arguments(measurement, spec.loudness)
    frames = clip_frames(spec)
    command = build_part_command(
        source,
        info,
        part,
        spec,
        {frame.format: _local_files(workdir, part, frame.format) for frame in frames},
        cards=cards,
        loudnorm=loudnorm,
        seek_to=seek_to,
    )
    run_ffmpeg(command.args, timeout=ffmpeg_timeout, limits=info.decode, on_progress=on_progress, stop=stop)
    return [
        _made_clip(part, frame.format, command.files[frame.format], command.expected_seconds, info)
        for frame in frames
    ]


def _local_files(workdir: Path, part: Part, clip_format: str) -> FormatFiles:
    """A part's scratch files in one format, named as their objects are (``shared.layout``)."""

    def local(name: str) -> Path:
        return workdir / PurePosixPath(name).name

    return FormatFiles(
        clip=local(layout.clip_object("", part.index, clip_format)),
        poster=local(layout.poster_object("", part.index, clip_format)),
        preview=local(layout.preview_object("", part.index, clip_format)),
    )


def _made_clip(
    part: Part, clip_format: ClipFormat, files: FormatFiles, expected: float, info: SourceInfo
) -> LocalClip:
    """One format's clip as the run left it, checked to be whole."""
    duration = _clip_duration(files.clip, info)
    if duration < expected - _SHORT_CLIP_TOLERANCE:
        raise PermanentFailure(
            f"the source is damaged: part {part.index} gave {duration:.1f} s of video "
            f"where {part.duration:.1f} s were expected"
        )
    if not files.poster.is_file():
        raise PermanentFailure(f"no poster frame could be taken from part {part.index}")
    preview = files.preview if files.preview is not None and files.preview.is_file() else None
    if files.preview is not None and preview is None:
        raise PermanentFailure(f"no preview could be made from part {part.index}")
    return LocalClip(
        part=part,
        path=files.clip,
        poster_path=files.poster,
        duration_seconds=round(duration, 3),
        size_bytes=files.clip.stat().st_size,
        format=clip_format,
        preview_path=preview,
    )


def _clip_duration(path: Path, info: SourceInfo) -> float:
    probe = run_ffprobe(path, timeout=60, decode=info.decode)
    try:
        return float(probe["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        raise PermanentFailure("a clip came out without a duration") from None
