"""Two-pass loudness normalization (EBU R128, ITU-R BS.1770) of a part's audio.

Pass 1 measures the part's content audio in an audio-only ffmpeg run: the same input
seek, allow-lists and limits as the clip's run (:mod:`.hardening`, :mod:`.runner`), the
same downmix to stereo, and ``loudnorm`` printing what it measured as JSON.
Pass 2 is a filter in the clip's own run: ``loudnorm`` given those measurements
(:func:`loudnorm_arguments`), so it applies one constant gain to the whole part.

Pass 1 runs loudnorm as a meter only, told its input is already at its target
(:data:`_METER_OPTIONS`), so it passes the audio through linearly at unity gain. Left to
its dynamic mode, ffmpeg's loudnorm (5.1) feeds its final 3 s window to its input meter
a second time: a part louder at its end measures too loud (a 12 s tone 10 dB louder in
its last 3 s: -24.5 LUFS where the linear pass and the ``ebur128`` meter read -26.1).

The pieces here are pure (the measuring command, the parser, the filter arguments)
except :func:`measure_part`, which runs ffmpeg.

Rules (docs/transcoder.md, "Loudness"):

- A part measured below :data:`SILENCE_FLOOR_LUFS` (digital silence measures -inf) is
  left as it is: the gain that would take it to the target would turn hiss into noise.
- The loudness range target is loudnorm's widest, so a part is never compressed for
  its range: loudnorm normalizes linearly unless the gain would push the true peak over
  the ceiling; then its dynamic mode runs, which with this range keeps the same gain and
  lets its true-peak limiter hold the ceiling.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import content_audio, part_span
from services.transcoder.hardening import local_url, source_input_options, thread_options
from services.transcoder.plan import Part
from services.transcoder.probe import SourceInfo
from services.transcoder.runner import StopSignal, run_ffmpeg
from shared.events import ClipSpec, LoudnessSpec

# Below this integrated loudness a part is silence or room noise, and is not raised.
SILENCE_FLOOR_LUFS = -60.0
# loudnorm's widest loudness range target: the range is kept, never compressed.
LOUDNESS_RANGE_LU = 50.0
# loudnorm reads a measured range of 0 and a threshold of -70 as "not measured" and
# then will not run linearly; a steady tone truly measures a range of 0, and a part at
# the floor a threshold of -70, so they are given these instead.
_LEAST_RANGE_LU = 0.01
_LEAST_THRESHOLD_LUFS = -69.99
# AAC's quantization noise lifts the true peak of the encoded clip over what loudnorm's
# limiter held (by up to 0.3 dB at 128 kb/s on voice-like sound); the limiter aims this
# far under the ceiling so the clip as delivered keeps it.
AAC_TRUE_PEAK_HEADROOM_DB = 0.5
# loudnorm's lowest true peak ceiling.
_LOWEST_CEILING_DBTP = -9.0
# The bounds loudnorm accepts for its measured_* and offset options.
_MEASURED_MIN, _MEASURED_MAX = -99.0, 99.0

# What makes pass 1's loudnorm a unity-gain meter: "measured" at its target, with a
# true peak far below the ceiling and a range inside the target's, it runs linearly.
_METER_OPTIONS = {
    "I": "-24.00",
    "TP": "-1.00",
    "LRA": f"{LOUDNESS_RANGE_LU:.2f}",
    "measured_I": "-24.00",
    "measured_TP": "-99.00",
    "measured_LRA": "1.00",
    "measured_thresh": "-34.00",
    "linear": "true",
    "print_format": "json",
}

_JSON_BLOCK = re.compile(r"\{[^{}]*\"input_i\"[^{}]*\}", re.DOTALL)


@dataclass(frozen=True)
class LoudnessMeasurement:
    """What pass 1 measured of a part's audio (loudnorm's ``input_*`` values)."""

    integrated_lufs: float  # -inf for digital silence
    true_peak_dbtp: float  # the peak at 192 kHz, i.e. 4x oversampled
    range_lu: float
    threshold_lufs: float

    @property
    def is_silent(self) -> bool:
        """Whether the part is too quiet to be raised (:data:`SILENCE_FLOOR_LUFS`)."""
        return not math.isfinite(self.integrated_lufs) or self.integrated_lufs < SILENCE_FLOOR_LUFS


def build_measure_command(
    source: Path, info: SourceInfo, part: Part, spec: ClipSpec, seek_to: float | None = None
) -> list[str]:
    """The audio-only ffmpeg arguments that measure ``part`` of ``source`` (pass 1;
    ``seek_to`` as in :func:`.graph.part_span`)."""
    src = ffmpeg.input(
        local_url(source),
        **part_span(part, seek_to),
        vn=None,
        sn=None,
        dn=None,
        **source_input_options(info.decode),
        **thread_options(info.decode),
    )
    measured = content_audio(src["a:0"], info, spec).filter("loudnorm", **_METER_OPTIONS)
    # loudnorm prints its measurement at the info level, as the run ends.
    command = ffmpeg.output(measured, "-", f="null").global_args(
        "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info"
    )
    return [str(arg) for arg in command.compile(cmd="ffmpeg")]


def parse_measurement(stderr: Iterable[str]) -> LoudnessMeasurement:
    """The measurement in what a pass-1 run wrote to stderr (its last loudnorm JSON).

    Raises ValueError when there is none, or a value is missing or not a number."""
    blocks = _JSON_BLOCK.findall("\n".join(stderr))
    if not blocks:
        raise ValueError("loudnorm printed no measurement")
    try:
        values = json.loads(blocks[-1])
        return LoudnessMeasurement(
            integrated_lufs=float(values["input_i"]),
            true_peak_dbtp=float(values["input_tp"]),
            range_lu=float(values["input_lra"]),
            threshold_lufs=float(values["input_thresh"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"loudnorm printed an unreadable measurement: {exc}") from None


def loudnorm_arguments(measurement: LoudnessMeasurement, target: LoudnessSpec) -> dict[str, str] | None:
    """The ``loudnorm`` options that bring a part measured as ``measurement`` to
    ``target`` in the clip's run (pass 2); None: leave the part's audio as it is."""
    if measurement.is_silent:
        return None
    return {
        "I": _number(target.target_lufs),
        "TP": _number(max(_LOWEST_CEILING_DBTP, target.true_peak_dbtp - AAC_TRUE_PEAK_HEADROOM_DB)),
        "LRA": _number(LOUDNESS_RANGE_LU),
        "measured_I": _number(_bounded(measurement.integrated_lufs, high=0.0)),
        "measured_TP": _number(_bounded(measurement.true_peak_dbtp)),
        "measured_LRA": _number(max(_LEAST_RANGE_LU, _bounded(measurement.range_lu))),
        "measured_thresh": _number(_bounded(measurement.threshold_lufs, low=_LEAST_THRESHOLD_LUFS, high=0.0)),
        "linear": "true",
        "print_format": "none",
    }


def measure_part(
    source: Path,
    info: SourceInfo,
    part: Part,
    spec: ClipSpec,
    *,
    timeout: float,
    stop: StopSignal | None = None,
    seek_to: float | None = None,
) -> LoudnessMeasurement:
    """Run pass 1 on ``part`` under the source's limits; ``stop`` ends it at once."""
    stderr = run_ffmpeg(
        build_measure_command(source, info, part, spec, seek_to),
        timeout=timeout,
        limits=info.decode,
        stop=stop,
    )
    try:
        return parse_measurement(stderr)
    except ValueError as exc:
        raise PermanentFailure(f"the loudness of part {part.index} could not be measured ({exc})") from None


def _bounded(value: float, low: float = _MEASURED_MIN, high: float = _MEASURED_MAX) -> float:
    return min(high, max(low, value))


def _number(value: float) -> str:
    return f"{value:.2f}"
