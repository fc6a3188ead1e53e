"""Pure planning: which parts a source is cut into, how each is fitted, where it goes
(the object names come from ``shared.layout``).

Nothing here touches a file or a process, so every rule is tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from shared import layout
from shared.events import FORMAT_SIZES, ClipFormat, ClipSpec


@dataclass(frozen=True)
class Part:
    """One part of the source: ``duration`` seconds from ``start``. ``index`` counts from 1
    and names the clip (``part-01.mp4``)."""

    index: int
    start: float
    duration: float


def plan_parts(duration: float, spec: ClipSpec, cuts: Sequence[float] = ()) -> list[Part]:
    """Cut ``duration`` seconds into consecutive parts of at most ``spec.max_part_seconds``.

    ``split`` keeps every part (45 s -> 20, 20, 5); ``trim`` only the first. A tail
    shorter than one output frame is container rounding, not content, and is dropped.

    With ``spec.split == "scenes"`` a boundary moves back to the last of ``cuts`` (scene
    cut times, seconds from the source's start) within the ``spec.scene_window_seconds``
    before it, and stays at the full length where none is; see :func:`_scene_parts`.
    """
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"a source duration must be positive, got {duration!r}")
    if spec.split == "scenes":
        return _scene_parts(duration, spec, cuts)
    frame = 1.0 / spec.fps
    length = spec.max_part_seconds
    parts: list[Part] = []
    start = 0.0
    while duration - start >= frame or not parts:
        part_duration = min(length, duration - start)
        parts.append(Part(index=len(parts) + 1, start=round(start, 6), duration=round(part_duration, 6)))
        if spec.mode == "trim":
            break
        start += length
    return parts


def _scene_parts(duration: float, spec: ClipSpec, cuts: Sequence[float]) -> list[Part]:
    """Scene-aware parts, counted in output frames (``1 / spec.fps``) so that every
    boundary is a frame's start and the parts are frame-exact.

    A cut is placed on the nearest frame. A part runs from its start to the latest cut
    in the window ``[end - scene_window_seconds, end]`` before its full-length end
    ``end``, a cut on ``end`` keeping it there; a cut on the part's own start is the
    boundary already made, not a new one. The last part ends with the source.
    """
    fps = spec.fps
    total = duration * fps  # in frames, not rounded: the source's end is not snapped
    longest = _longest_frames(spec)
    window = spec.scene_window_seconds * fps
    cut_frames = sorted({round(cut * fps) for cut in cuts if math.isfinite(cut)})
    parts: list[Part] = []
    start = 0
    while total - start >= 1 or not parts:
        end = start + longest
        if end >= total:
            length = total - start
        else:
            in_window = [cut for cut in cut_frames if start < cut <= end and cut >= end - window]
            length = (in_window[-1] if in_window else end) - start
        parts.append(Part(index=len(parts) + 1, start=round(start / fps, 6), duration=round(length / fps, 6)))
        if spec.mode == "trim":
            break
        start += round(length)
    return parts


def _longest_frames(spec: ClipSpec) -> int:
    """The most whole output frames a scene-aware part may last."""
    return max(1, math.floor(spec.max_part_seconds * spec.fps + 1e-9))


# Read from this long before a window, so that a cut on the window's first frame has a
# frame before it to be scored against (longer than a frame of any source rate above 4).
SCENE_WINDOW_LEAD_SECONDS = 0.25


def plan_scene_parts(
    duration: float,
    spec: ClipSpec,
    find_cuts: Callable[[float, float], Sequence[float]],
) -> list[Part]:
    """:func:`plan_parts` for ``split == "scenes"``, asking ``find_cuts(start, seconds)``
    only for the cuts in the windows it needs: the ``scene_window_seconds`` before each
    part's full-length end, part after part, since each part starts where the one before
    ended. The rest of the source is never searched."""
    cuts: list[float] = []
    searched = 0
    while True:
        parts = plan_parts(duration, spec, cuts)
        if searched >= len(parts):
            return parts
        part = parts[searched]
        end = part.start + _longest_frames(spec) / spec.fps
        if end >= duration:
            return parts  # this part ends with the source; so do those after it (none)
        begin = max(0.0, end - spec.scene_window_seconds - SCENE_WINDOW_LEAD_SECONDS)
        cuts.extend(find_cuts(begin, end - begin))
        searched += 1


@dataclass(frozen=True)
class Fit:
    """How a picture of the source's display size becomes the clip's frame: scale to
    ``scale_width`` x ``scale_height`` (square pixels), then pad (bars) or crop at
    ``x``, ``y`` to the output size."""

    mode: Literal["pad", "crop"]
    scale_width: int
    scale_height: int
    x: int
    y: int


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def fit_geometry(
    display_width: int,
    display_height: int,
    out_width: int,
    out_height: int,
    mode: Literal["pad", "crop"],
) -> Fit:
    """Fit a ``display_width`` x ``display_height`` picture (already upright, square
    pixels) into ``out_width`` x ``out_height`` without distortion.

    ``pad`` scales to fit inside and centres it on bars; ``crop`` scales to cover and
    keeps the centre. Sizes and offsets are even, as 4:2:0 chroma requires.
    """
    if display_width <= 0 or display_height <= 0:
        raise ValueError("display size must be positive")
    if mode == "pad":
        scale = min(out_width / display_width, out_height / display_height)
        width = min(out_width, _even(display_width * scale))
        height = min(out_height, _even(display_height * scale))
        return Fit("pad", width, height, _even_offset(out_width - width), _even_offset(out_height - height))
    scale = max(out_width / display_width, out_height / display_height)
    width = max(out_width, _even(display_width * scale))
    height = max(out_height, _even(display_height * scale))
    return Fit("crop", width, height, _even_offset(width - out_width), _even_offset(height - out_height))


def _even_offset(slack: int) -> int:
    return (slack // 2) // 2 * 2


@dataclass(frozen=True)
class Frame:
    """One frame a part is delivered in: its format, size and fit."""

    format: ClipFormat
    width: int
    height: int
    fit: Literal["pad", "crop"]


def clip_frames(spec: ClipSpec) -> tuple[Frame, ...]:
    """The frames each part is made in, in the spec's order.

    No ``formats``: the one 16:9 frame of ``width`` x ``height`` fitted by ``fit``, as
    before formats existed. A 16:9 entry takes the spec's ``width`` x ``height``; the
    others their ``FORMAT_SIZES``. A format asked for twice is refused (its outputs
    would share names).
    """
    if not spec.formats:
        return (Frame("16:9", spec.width, spec.height, spec.fit),)
    frames = []
    for wanted in spec.formats:
        width, height = FORMAT_SIZES.get(wanted.format, (spec.width, spec.height))
        frames.append(Frame(wanted.format, width, height, wanted.fit))
    names = [frame.format for frame in frames]
    if len(set(names)) != len(names):
        raise ValueError(f"a format is asked for more than once: {names}")
    return tuple(frames)


def clip_formats(spec: ClipSpec) -> frozenset[str]:
    """The formats each part of ``spec`` is delivered in."""
    return frozenset(frame.format for frame in clip_frames(spec))


def clip_object_name(task_id: object, part: Part, clip_format: str = layout.DEFAULT_FORMAT) -> str:
    """Where a part's clip in ``clip_format`` is stored in the clips bucket (``shared.layout``)."""
    return layout.clip_object(task_id, part.index, clip_format)


def poster_object_name(task_id: object, part: Part, clip_format: str = layout.DEFAULT_FORMAT) -> str:
    """Where a part's poster in ``clip_format`` is stored in the clips bucket (``shared.layout``)."""
    return layout.poster_object(task_id, part.index, clip_format)


def preview_object_name(task_id: object, part: Part, clip_format: str = layout.DEFAULT_FORMAT) -> str:
    """Where a part's preview in ``clip_format`` is stored in the clips bucket (``shared.layout``)."""
    return layout.preview_object(task_id, part.index, clip_format)


def task_prefix(task_id: object) -> str:
    """The prefix under which every object of a task's outputs lives (``shared.layout``)."""
    return layout.task_folder(task_id)
