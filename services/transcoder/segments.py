"""A part's own piece of the source, so that a worker making one part transfers only
what that part needs.

A part's segment is a stream copy of the source (nothing decoded) from a keyframe at or
before the part's start to a little past its end, every packet keeping the source's own
timestamps. A decoder can start at that keyframe, so the part's run on its segment seeks
to the same instant of the same timeline as a run on the whole source would
(``-seek_timestamp``), and decodes the same frames: consecutive parts join with no
missing or repeated frame. Where the source's demuxer seeks by byte position (MPEG-TS)
and lands past its aim, the segment is still right: its start is read back and, if
late, cut again from earlier.

Segments are Matroska, which keeps times to the millisecond, far finer than a frame.
They hold the part's video stream and the source's first audio stream, the only ones a
clip uses. A source whose video does not survive the copy is not cut
(:func:`can_segment`): its parts read the source itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.transcoder.errors import PermanentFailure
from services.transcoder.hardening import local_url, source_input_options
from services.transcoder.plan import Part
from services.transcoder.probe import SourceInfo, run_ffprobe
from services.transcoder.runner import StopSignal, run_ffmpeg

# Packets kept past a part's end: B-frames shown before the end are sent after later
# frames they depend on; a second covers any reordering an encoder does.
END_MARGIN_SECONDS = 1.0
SEGMENT_SUFFIX = ".mkv"
# Where a segment's copy seeks the source, before the part's start: at it (a demuxer that
# seeks exactly lands on the keyframe before it), then further back, then from the
# source's start. A demuxer that seeks by byte position (MPEG-TS) can land past its aim.
SEEK_BACKS = (0.0, 2.0, 5.0, 10.0, math.inf)
# The video codecs (ffprobe's names) whose stream copy into Matroska decodes to the same
# frames as the source, checked for each with a 1 s clip of its encoder; VP8, MPEG-1
# and MPEG-2 are listed unchecked (an MPEG-PS file's MPEG-2 would not copy: a cut that
# fails falls back). QuickTime Animation (qtrle) is not among them: its bits per pixel do not
# survive the copy, and nothing decodes. A part of a source in any other codec is made
# from the whole source, as is one whose cut fails.
SEGMENT_VIDEO_CODECS = frozenset(
    {
        "h264",
        "hevc",
        "vp8",
        "vp9",
        "av1",
        "mpeg4",
        "mpeg1video",
        "mpeg2video",
        "h263",
        "flv1",
        "msmpeg4v3",
        "wmv2",
        "theora",
        "mjpeg",
        "png",
        "prores",
        "dnxhd",
        "cfhd",
        "dvvideo",
        "ffv1",
        "rawvideo",
    }
)
# Matroska keeps times to the millisecond.
_TIME_TOLERANCE = 0.0015


@dataclass(frozen=True)
class Segment:
    """The packets of the source one part needs, in a file of their own.

    ``origin`` is the source's start time: the part's first instant is ``origin +
    part.start`` on the timeline the segment keeps. ``info`` describes the segment as a
    run reads it (its video is stream 0)."""

    part: Part
    path: Path
    keyframe: float  # the time the segment starts at, on the source's timeline
    origin: float
    info: SourceInfo

    @property
    def seek_to(self) -> float:
        """Where the part starts, on the timeline the segment keeps."""
        return self.origin + self.part.start


def build_cut_command(
    source: Path, info: SourceInfo, start: float | None, end: float, path: Path
) -> list[str]:
    """The stream copy of the source from the keyframe its demuxer seeks to for
    ``start`` (None: from its first packet) to ``end``, times on the source's own
    timeline, into ``path``."""
    seek = {"ss": f"{start:.6f}", "seek_timestamp": 1} if start is not None else {}
    src = ffmpeg.input(local_url(source), **seek, **source_input_options(info.decode))
    streams = [src[str(info.video_stream)]]
    if info.has_audio:
        streams.append(src["a:0"])
    command = (
        ffmpeg.output(
            *streams,
            str(path),
            c="copy",
            to=f"{end:.6f}",
            # Not shifted to start at zero (an MP4's AAC priming starts before it).
            avoid_negative_ts="disabled",
            map_metadata=-1,
            map_chapters=-1,
            f="matroska",
        )
        # -copyts: every packet keeps the source's timestamp, and -to is on that timeline.
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-copyts")
        .overwrite_output()
    )
    return command.compile(cmd="ffmpeg")


def can_segment(info: SourceInfo) -> bool:
    """Whether the source's video survives a stream copy into a segment: its codec does,
    and it needs no rotation (ffmpeg 5.1 writes no rotation into Matroska, so an upright
    phone video would come out lying down)."""
    return info.video_codec in SEGMENT_VIDEO_CODECS and info.rotation == 0


def source_origin(source: Path, info: SourceInfo, *, timeout: float) -> float:
    """The time the source's timeline starts at (its container's start time)."""
    found = run_ffprobe(
        source, timeout=timeout, decode=info.decode, show=("-show_entries", "format=start_time")
    )
    return _seconds((found.get("format") or {}).get("start_time")) or 0.0


def cut_segment(
    source: Path,
    info: SourceInfo,
    part: Part,
    folder: Path,
    *,
    origin: float,
    timeout: float,
    stop: StopSignal | None = None,
) -> Segment:
    """``part``'s segment in ``folder``: a stream copy bounded by ``timeout`` that starts
    at a keyframe at or before the part's start, the last one where the demuxer seeks
    exactly."""
    # In a segment, the part's video is the first stream and its audio the second.
    segment_info = dataclasses.replace(info, video_stream=0)
    begin = origin + part.start
    end = begin + part.duration + END_MARGIN_SECONDS
    path = folder / f"segment-{part.index:02d}{SEGMENT_SUFFIX}"
    for back in SEEK_BACKS:
        aim = begin - back
        run_ffmpeg(
            build_cut_command(source, info, aim if aim > origin else None, end, path),
            timeout=timeout,
            limits=info.decode,
            stop=stop,
            activity="cutting the source into parts",
        )
        first = _first_video_time(path, segment_info, timeout=timeout)
        if first is not None and (first <= begin + _TIME_TOLERANCE or aim <= origin):
            # At or before the part's start, or the source's own first packet.
            return Segment(part, path, first, origin, segment_info)
    raise PermanentFailure(f"part {part.index} could not be cut from the source")


def cut_segments(
    source: Path,
    info: SourceInfo,
    parts: Sequence[Part],
    folder: Path,
    *,
    timeout: float,
    stop: StopSignal | None = None,
) -> list[Segment]:
    """Every part's segment in ``folder`` (:func:`cut_segment`)."""
    origin = source_origin(source, info, timeout=timeout)
    return [
        cut_segment(source, info, part, folder, origin=origin, timeout=timeout, stop=stop) for part in parts
    ]


def _first_video_time(path: Path, info: SourceInfo, *, timeout: float) -> float | None:
    """When the segment's first video packet is shown, on the source's timeline."""
    found = run_ffprobe(
        path,
        timeout=timeout,
        decode=info.decode,
        show=("-select_streams", "0", "-show_entries", "packet=pts_time", "-read_intervals", "%+#1"),
    )
    packets = found.get("packets") or [{}]
    return _seconds(packets[0].get("pts_time"))


def _seconds(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
