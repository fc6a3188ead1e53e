"""Where a source's shots change: one ffmpeg run, video only, over the whole source or
over one span of it (the planner asks only for the windows a boundary may move to:
:func:`.plan.plan_scene_parts`).

The run decodes every frame it reads (at the source's own rate, so a cut is placed to the
frame), shrinks it to a small grey picture and hands it to ffmpeg's ``scdet`` filter.
``scdet`` scores each frame against the one before it (0-100: the mean absolute
difference of the pixels, less the previous frame's, so steady motion scores low and a
sudden change high) and tags the frames scoring over :data:`SCENE_THRESHOLD` with
``lavfi.scd.time``; ``metadata=print`` writes those tags to a file, which
:func:`parse_cuts` reads. The time tagged is the first frame of the new shot, in
seconds from the source's start, the clock part starts (``-ss``) are given on.

The run is made like a clip's: the source under the allow-lists and the decoder's
limits of :mod:`.hardening`, through :func:`.runner.run_ffmpeg` for the wall-clock
limit, the memory limit and the stop signal.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import ffmpeg

from services.transcoder.hardening import local_url, source_input_options, thread_global_args, thread_options
from services.transcoder.probe import SourceInfo
from services.transcoder.runner import StopSignal, run_ffmpeg

# A hard cut between two shots scores 25 and more on the grey 160x90 picture; a pan of
# three frame widths a second scores under 8, ordinary motion under 1 (measured with
# ffmpeg's test patterns; docs/transcoder.md). 12 sits between the two.
SCENE_THRESHOLD = 12.0
# The picture the score is taken on: enough to tell shots apart, cheap to compare.
DETECT_WIDTH, DETECT_HEIGHT = 160, 90

_CUT_KEY = "lavfi.scd.time"


def build_detect_command(
    source: Path,
    info: SourceInfo,
    cuts_path: Path,
    *,
    start: float = 0.0,
    seconds: float | None = None,
) -> list[str]:
    """The ffmpeg arguments that write the scene cuts of ``source`` to ``cuts_path``:
    of the whole source, or of ``seconds`` from ``start`` (input seeking, as a part's
    run; the times written are then counted from ``start``)."""
    span = {"ss": f"{start:.6f}"} if start > 0 else {}
    if seconds is not None:
        span["t"] = f"{seconds:.6f}"
    # The run costs about one decode of what it reads; deblocking is a fifth of an H.264
    # decode and changes nothing a 160x90 grey score can see.
    src = ffmpeg.input(
        local_url(source),
        skip_loop_filter="all",
        **span,
        **source_input_options(info.decode),
        **thread_options(info.decode),
    )
    video = (
        src[str(info.video_stream)]
        # The picture's shape does not matter to the score, only its content: a fixed
        # size also serves a source of any aspect ratio.
        .filter("scale", DETECT_WIDTH, DETECT_HEIGHT, flags="fast_bilinear")
        .filter("format", "gray")
        .filter("scdet", threshold=SCENE_THRESHOLD, sc_pass=0)
        .filter("metadata", mode="print", key=_CUT_KEY, file=str(cuts_path))
    )
    command = (
        ffmpeg.output(video, "-", f="null", an=None, sn=None, dn=None)
        .global_args(
            "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", *thread_global_args(info.decode)
        )
        .overwrite_output()
    )
    return command.compile(cmd="ffmpeg")


def parse_cuts(text: str) -> tuple[float, ...]:
    """The cut times (seconds, ascending, each once) in ``metadata=print`` output.

    Each tagged frame is two lines, ``frame:N pts:P pts_time:T`` and
    ``lavfi.scd.time=T``; only the second is read. A cut at or before the start is no
    boundary, and a value that is not a finite number is not a time.
    """
    cuts: set[float] = set()
    prefix = _CUT_KEY + "="
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(prefix):
            continue
        try:
            value = float(line[len(prefix) :])
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            cuts.add(value)
    return tuple(sorted(cuts))


def detect_cuts(
    source: Path,
    info: SourceInfo,
    *,
    timeout: float,
    stop: StopSignal | None = None,
    start: float = 0.0,
    seconds: float | None = None,
) -> tuple[float, ...]:
    """The scene cuts of ``source`` (or of ``seconds`` of it from ``start``), in seconds
    from its start. A cut on the first frame read is not seen: it has no frame before it.

    Raises what :func:`.runner.run_ffmpeg` raises: :class:`.errors.PermanentFailure`
    when the source cannot be decoded or the run passes ``timeout`` or the limits,
    :class:`.errors.ProcessingStopped` when ``stop`` is set.
    """
    if stop is not None:
        stop.raise_if_set()
    with tempfile.TemporaryDirectory(prefix="scenes-") as scratch:
        cuts_path = Path(scratch) / "cuts.txt"
        run_ffmpeg(
            build_detect_command(source, info, cuts_path, start=start, seconds=seconds),
            timeout=timeout,
            limits=info.decode,
            stop=stop,
            activity="finding the source's scene cuts",
        )
        if not cuts_path.is_file():
            return ()  # ffmpeg stopped before it opened the file
        cuts = parse_cuts(cuts_path.read_text(encoding="utf-8", errors="replace"))
    return tuple(round(start + cut, 6) for cut in cuts)
