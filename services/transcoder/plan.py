"""Pure planning: which parts a source is cut into, how each is fitted, where it goes
(the object names come from ``shared.layout``).

Nothing here touches a file or a process, so every rule is tested on its own.
"""

from __future__ import annotations

import math
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


def plan_parts(duration: float, spec: ClipSpec) -> list[Part]:
    """Cut ``duration`` seconds into consecutive parts of at most ``spec.max_part_seconds``.

    ``split`` keeps every part (45 s -> 20, 20, 5); ``trim`` only the first. A tail
    shorter than one output frame is container rounding, not content, and is dropped.
    """
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"a source duration must be positive, got {duration!r}")
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
