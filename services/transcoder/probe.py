"""Probe a source by its content and enforce the limits before any encoding.

ffprobe reads the file under the same hardening as ffmpeg (see :mod:`.hardening`): the
file protocol only, demuxer and decoder allow-lists, the decoder's picture-size limit
and the memory limit. Anything it cannot read, a file with no video stream, or one past
a limit is a permanent failure with a reason the task's owner can act on.

The probe sees the stream's first pictures only; a later one larger than the limit is
refused by the decoder while the clip is made (:data:`SourceInfo.decode`).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from services.transcoder.errors import PermanentFailure, owner_detail
from services.transcoder.hardening import DecodeLimits, local_url, source_input_options
from services.transcoder.runner import hit_memory_limit, launch_prefix, memory_reason, oversized_picture
from shared.config import get_settings

# ffmpeg's words for a decoder off the allow-list.
_REFUSED_DECODER = re.compile(r"Codec \(([\w-]+)\) not on whitelist")


def _configured_memory_limit() -> int:
    return get_settings().ffmpeg_memory_limit_bytes


@dataclass(frozen=True)
class SourceLimits:
    max_bytes: int
    max_seconds: float
    max_width: int
    max_height: int
    # What each ffmpeg and ffprobe run on the source may use (0: no limit).
    max_memory_bytes: int = field(default_factory=_configured_memory_limit)
    # The threads of each ffmpeg run's decoder, filter graph and encoders (0: ffmpeg's choice).
    threads: int = 0

    @property
    def decode(self) -> DecodeLimits:
        """The decoder's limits: no picture larger than the largest source allowed (a
        portrait source has the same count), the memory limit and the threads."""
        return DecodeLimits(self.max_width, self.max_height, self.max_memory_bytes, self.threads)


@dataclass(frozen=True)
class SourceInfo:
    """What the pipeline needs to know about a source."""

    container: str
    size_bytes: int
    duration: float  # seconds of video to cut into parts
    width: int  # coded picture size
    height: int
    display_width: int  # upright, square-pixel size: after rotation and aspect ratio
    display_height: int
    rotation: int  # 0, 90, 180 or 270
    frame_rate: float
    video_stream: int  # index of the video stream in the container
    has_audio: bool
    video_codec: str
    # The video's colour description as ffprobe names it ("" where the stream has none).
    color_transfer: str = ""
    color_primaries: str = ""
    color_space: str = ""
    color_range: str = ""
    pixel_format: str = ""  # ffmpeg's name, e.g. "yuv420p", "rgb24"
    # The first audio stream's channel count, and its layout ("" where it has no name).
    audio_channels: int = 0
    audio_layout: str = ""
    # What every ffmpeg run on the source may decode and use (from the limits probed under).
    decode: DecodeLimits = DecodeLimits()


def run_ffprobe(
    path: Path,
    *,
    timeout: float,
    decode: DecodeLimits = DecodeLimits(),
    show: Sequence[str] = ("-show_format", "-show_streams"),
) -> dict:
    """ffprobe's JSON for ``path`` (what ``show`` asks for: its format and streams by
    default), read under ``decode``; :class:`PermanentFailure` when it cannot read it."""
    args = [*launch_prefix(decode.memory_bytes), "ffprobe", "-v", "error", "-hide_banner"]
    for option, value in source_input_options(decode).items():
        args += [f"-{option}", value]
    args += [*show, "-of", "json", local_url(path)]
    # ffmpeg-python's probe() cannot bound the run time, hence the direct call.
    try:
        completed = subprocess.run(
            args, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False
        )
    except subprocess.TimeoutExpired:
        raise PermanentFailure(f"the source could not be read within {timeout:.0f} s") from None
    stderr = completed.stderr.decode("utf-8", "replace")
    # ffprobe may still exit 0 then, listing the stream without its size.
    if size := oversized_picture(stderr):
        raise PermanentFailure(f"the source is {size}, over the {decode.max_width}x{decode.max_height} limit")
    if completed.returncode != 0:
        raise PermanentFailure(_probe_failure(completed.returncode, stderr, decode))
    try:
        return json.loads(completed.stdout)
    except json.JSONDecodeError:
        raise PermanentFailure("the source is not a readable video") from None


def _probe_failure(returncode: int, stderr: str, decode: DecodeLimits) -> str:
    if refused := _REFUSED_DECODER.search(stderr):
        return f"the source's {refused.group(1)} codec is not supported"
    if hit_memory_limit(returncode, stderr, decode.memory_bytes):
        return memory_reason(decode.memory_bytes)
    detail = _first_line(stderr) or "unknown format"
    return f"the source is not a readable video ({detail})"


def _first_line(stderr: str) -> str:
    for line in stderr.splitlines():
        line = line.strip()
        if line:
            # ffprobe prefixes its messages with the file name; keep only what follows.
            return owner_detail(line).rsplit(": ", 1)[-1][:200]
    return ""


def probe_source(path: Path, limits: SourceLimits, *, timeout: float = 60.0) -> SourceInfo:
    """Probe ``path`` and check it against ``limits``; raises :class:`PermanentFailure`."""
    size = path.stat().st_size
    if size == 0:
        raise PermanentFailure("the source is empty (0 bytes)")
    if size > limits.max_bytes:
        raise PermanentFailure(
            f"the source is {_megabytes(size)}, over the {_megabytes(limits.max_bytes)} limit"
        )
    return describe_source(run_ffprobe(path, timeout=timeout, decode=limits.decode), size, limits)


def describe_source(probe: dict, size: int, limits: SourceLimits) -> SourceInfo:
    """Turn ffprobe's JSON into a :class:`SourceInfo`, enforcing ``limits`` (pure)."""
    streams = probe.get("streams") or []
    videos = [
        s
        for s in streams
        if s.get("codec_type") == "video"
        and not (s.get("disposition") or {}).get("attached_pic")
        and s.get("width")
        and s.get("height")
    ]
    if not videos:
        raise PermanentFailure("the source has no video stream")
    video = videos[0]
    if not video.get("codec_name"):
        raise PermanentFailure("the source's video codec is not supported")
    # The clip takes the first audio stream; one ffprobe cannot name is no audio at all.
    audios = [s for s in streams if s.get("codec_type") == "audio"]
    has_audio = bool(audios) and bool(audios[0].get("codec_name"))
    audio = audios[0] if has_audio else {}

    fmt = probe.get("format") or {}
    duration = _duration(fmt.get("duration"), video.get("duration"))
    if duration is None:
        raise PermanentFailure("the source's duration cannot be determined")
    if duration > limits.max_seconds:
        raise PermanentFailure(
            f"the source lasts {duration:.0f} s, over the {limits.max_seconds:.0f} s limit"
        )

    width, height = int(video["width"]), int(video["height"])
    rotation = _rotation(video)
    sar = _ratio(video.get("sample_aspect_ratio")) or Fraction(1)
    display_width, display_height = max(1, round(width * sar)), height
    if rotation in (90, 270):
        display_width, display_height = display_height, display_width
    longest, shortest = max(width, height), min(width, height)
    if longest > max(limits.max_width, limits.max_height) or shortest > min(
        limits.max_width, limits.max_height
    ):
        raise PermanentFailure(
            f"the source is {width}x{height}, over the {limits.max_width}x{limits.max_height} limit"
        )
    return SourceInfo(
        container=str(fmt.get("format_name", "")),
        size_bytes=size,
        duration=duration,
        width=width,
        height=height,
        display_width=display_width,
        display_height=display_height,
        rotation=rotation,
        frame_rate=float(_ratio(video.get("avg_frame_rate")) or _ratio(video.get("r_frame_rate")) or 0),
        video_stream=int(video["index"]),
        has_audio=has_audio,
        video_codec=str(video["codec_name"]),
        color_transfer=_named(video.get("color_transfer")),
        color_primaries=_named(video.get("color_primaries")),
        color_space=_named(video.get("color_space")),
        color_range=_named(video.get("color_range")),
        pixel_format=_named(video.get("pix_fmt")),
        audio_channels=_count(audio.get("channels")),
        audio_layout=_named(audio.get("channel_layout")),
        decode=limits.decode,
    )


def is_rgb(pixel_format: str) -> bool:
    """Whether ffmpeg's ``pixel_format`` holds RGB samples (rgb24, bgra, gbrp10le, a
    palette...) rather than luma and chroma."""
    return (
        "rgb" in pixel_format
        or "bgr" in pixel_format
        or pixel_format.startswith("gbr")
        or pixel_format == "pal8"
    )


def _named(value: object) -> str:
    """ffprobe's name for a property, "" where it has none (absent or "unknown")."""
    name = str(value or "").strip()
    return "" if name in ("unknown", "unspecified", "reserved") else name


def _count(value: object) -> int:
    try:
        return max(0, int(value)) if isinstance(value, int | float | str) else 0
    except (TypeError, ValueError):
        return 0


def _duration(container: object, stream: object) -> float | None:
    # The shorter of the two: a container whose audio outlasts its video would
    # otherwise plan a last part with no picture in it.
    values = []
    for value in (container, stream):
        try:
            seconds = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(seconds) and seconds > 0:
            values.append(seconds)
    return min(values) if values else None


def _ratio(value: object) -> Fraction | None:
    try:
        num, den = str(value).split(":" if ":" in str(value) else "/")
        ratio = Fraction(int(num), int(den))
    except (ValueError, ZeroDivisionError):
        return None
    return ratio if ratio > 0 else None


def _rotation(video: dict) -> int:
    """The display rotation, from the display matrix or the legacy ``rotate`` tag."""
    for side_data in video.get("side_data_list") or []:
        if "rotation" in side_data:
            return round(float(side_data["rotation"])) % 360 // 90 * 90
    try:
        return round(float((video.get("tags") or {}).get("rotate", 0))) % 360 // 90 * 90
    except ValueError:
        return 0


def _megabytes(size: int) -> str:
    return f"{size / 1_000_000:.0f} MB" if size >= 1_000_000 else f"{size} bytes"
