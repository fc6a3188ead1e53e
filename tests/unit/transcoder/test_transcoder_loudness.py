"""Loudness normalization's pure parts: the measuring command, reading what ffmpeg
measured, the filter of the clip's run, and where that filter sits in the clip's graph."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from services.transcoder.graph import build_clip_command
from services.transcoder.hardening import DecodeLimits
from services.transcoder.loudness import (
    SILENCE_FLOOR_LUFS,
    LoudnessMeasurement,
    build_measure_command,
    loudnorm_arguments,
    parse_measurement,
)
from services.transcoder.plan import Part
from shared.events import ClipSpec, LoudnessSpec
from tests.support.media import source_info as info

# The end of what ffmpeg 5.1 wrote to stderr in a measuring run (build_measure_command)
# on a music-like source, as the runner hands it back (lines stripped).
MEASURED_MUSIC = [
    "Stream #0:0: Audio: pcm_s16le, 48000 Hz, stereo, s16, 1536 kb/s",
    "Metadata:",
    "encoder         : Lavc59.37.100 pcm_s16le",
    "size=N/A time=00:00:04.00 bitrate=N/A speed=50.1x",
    "video:0kB audio:750kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown",
    "[Parsed_loudnorm_1 @ 0x564371aa7340]",
    "{",
    '"input_i" : "-23.97",',
    '"input_tp" : "-12.16",',
    '"input_lra" : "3.50",',
    '"input_thresh" : "-33.97",',
    '"output_i" : "-23.97",',
    '"output_tp" : "-12.16",',
    '"output_lra" : "3.50",',
    '"output_thresh" : "-33.97",',
    '"normalization_type" : "linear",',
    '"target_offset" : "-0.03"',
    "}",
]
# The same run on a source whose sound is digital silence.
MEASURED_SILENCE = [
    "video:0kB audio:375kB subtitle:0kB other streams:0kB global headers:0kB muxing overhead: unknown",
    "[Parsed_loudnorm_1 @ 0x562964c1bf40]",
    "{",
    '"input_i" : "-inf",',
    '"input_tp" : "-inf",',
    '"input_lra" : "0.00",',
    '"input_thresh" : "-70.00",',
    '"output_i" : "-inf",',
    '"output_tp" : "-inf",',
    '"output_lra" : "0.00",',
    '"output_thresh" : "-70.00",',
    '"normalization_type" : "linear",',
    '"target_offset" : "inf"',
    "}",
]


def measured(integrated=-23.97, true_peak=-12.16, lra=3.5, threshold=-33.97) -> LoudnessMeasurement:
    return LoudnessMeasurement(integrated, true_peak, lra, threshold)


def test_the_measurement_is_read_from_loudnorm_s_json():
    assert parse_measurement(MEASURED_MUSIC) == measured()


def test_digital_silence_measures_minus_infinity_and_is_silent():
    silence = parse_measurement(MEASURED_SILENCE)
    assert silence.integrated_lufs == -math.inf and silence.true_peak_dbtp == -math.inf
    assert silence.is_silent
    assert not parse_measurement(MEASURED_MUSIC).is_silent


def test_the_last_measurement_printed_is_the_one_read():
    earlier = [line.replace("-23.97", "-40.00") for line in MEASURED_MUSIC]
    assert parse_measurement(earlier + MEASURED_MUSIC).integrated_lufs == -23.97


@pytest.mark.parametrize(
    "stderr",
    [
        [],
        ["Conversion failed!"],
        [line for line in MEASURED_MUSIC if "input_tp" not in line],
        [line.replace('"-23.97"', '"loud"') for line in MEASURED_MUSIC],
        [line for line in MEASURED_MUSIC if line != "}"],
    ],
    ids=["nothing", "no-json", "a-value-missing", "not-a-number", "unclosed"],
)
def test_an_unreadable_measurement_is_refused(stderr):
    with pytest.raises(ValueError):
        parse_measurement(stderr)


def test_the_clip_s_loudnorm_gets_the_measurement_and_the_target():
    args = loudnorm_arguments(measured(), LoudnessSpec())
    assert args == {
        "I": "-14.00",
        "TP": "-1.50",  # the ceiling, less the headroom AAC's encoding eats
        "LRA": "50.00",
        "measured_I": "-23.97",
        "measured_TP": "-12.16",
        "measured_LRA": "3.50",
        "measured_thresh": "-33.97",
        "linear": "true",
        "print_format": "none",
    }
    other = loudnorm_arguments(measured(), LoudnessSpec(target_lufs=-23, true_peak_dbtp=-2))
    assert other is not None and (other["I"], other["TP"]) == ("-23.00", "-2.50")
    lowest = loudnorm_arguments(measured(), LoudnessSpec(true_peak_dbtp=-9))
    assert lowest is not None and lowest["TP"] == "-9.00"  # loudnorm's lowest ceiling


@pytest.mark.parametrize("integrated", [-math.inf, -90.0, SILENCE_FLOOR_LUFS - 0.01])
def test_a_silent_or_near_silent_part_is_left_as_it_is(integrated):
    assert loudnorm_arguments(measured(integrated=integrated, true_peak=-70), LoudnessSpec()) is None


def test_a_quiet_part_just_over_the_floor_is_normalized():
    args = loudnorm_arguments(measured(integrated=SILENCE_FLOOR_LUFS, threshold=-70.0), LoudnessSpec())
    assert args is not None and args["measured_I"] == "-60.00"
    # -70 is loudnorm's "no threshold measured", which would stop its linear mode.
    assert args["measured_thresh"] == "-69.99"


def test_a_steady_tone_s_zero_range_does_not_read_as_unmeasured():
    args = loudnorm_arguments(measured(lra=0.0), LoudnessSpec())
    assert args is not None and args["measured_LRA"] == "0.01"


def test_the_measuring_run_reads_only_the_part_s_audio_under_the_allow_lists():
    limited = info(decode=DecodeLimits(max_width=3840, max_height=2160))
    args = build_measure_command(Path("/scratch/source"), limited, Part(2, 20.0, 20.0), ClipSpec())
    source = args.index("-i")
    assert args[source + 1] == "file:/scratch/source" and args.count("-i") == 1
    before = args[:source]
    for option in ("-vn", "-sn", "-dn"):
        assert option in before
    assert before[before.index("-protocol_whitelist") + 1] == "file"
    assert (before[before.index("-ss") + 1], before[before.index("-t") + 1]) == ("20.000000", "20.000000")
    assert before[before.index("-max_pixels") + 1] == str(3840 * 2160)
    assert "aac" in before[before.index("-codec_whitelist") + 1].split(",")
    graph = args[args.index("-filter_complex") + 1]
    assert graph.startswith("[0:a:0]aformat=channel_layouts=stereo:sample_fmts=fltp:sample_rates=48000")
    assert "print_format=json" in graph and "linear=true" in graph
    assert args[args.index("-f") + 1] == "null"
    assert args[args.index("-loglevel") + 1] == "info"  # where loudnorm prints


def test_the_measuring_run_folds_many_unnamed_channels_as_the_clip_does():
    args = build_measure_command(
        Path("/scratch/source"), info(audio_channels=32), Part(1, 0.0, 5.0), ClipSpec()
    )
    assert "channelmap=channel_layout=stereo:map=0|1" in args[args.index("-filter_complex") + 1]


def clip_graph(loudnorm=None, **changes) -> str:
    args = build_clip_command(
        Path("/scratch/source"),
        info(**changes),
        Part(1, 0.0, 5.0),
        ClipSpec(),
        Path("/assets/logo.png"),
        Path("/scratch/part-01.mp4"),
        Path("/scratch/part-01.jpg"),
        loudnorm=loudnorm,
    ).args
    return args[args.index("-filter_complex") + 1]


def audio_chain(graph: str, start: str) -> list[str]:
    """The filters from the pad ``start`` on, one after the other, up to the concat."""
    links = {}
    for link in graph.split(";"):
        match = re.fullmatch(r"((?:\[[^]]+\])+)([a-z_]+)[=]?([^[]*)((?:\[[^]]+\])*)", link)
        assert match, link
        inputs, name, _, outputs = match.groups()
        for pad in re.findall(r"\[[^]]+\]", inputs):
            links[pad] = (name, re.findall(r"\[[^]]+\]", outputs))
    chain, pad = [], start
    while pad in links:
        name, outputs = links[pad]
        chain.append(name)
        if name == "concat":
            break
        pad = outputs[0]
    return chain


def test_without_loudness_the_clip_s_graph_has_no_loudnorm():
    graph = clip_graph()
    assert "loudnorm" not in graph
    assert audio_chain(graph, "[2:a:0]") == ["aformat", "asetpts", "concat"]


def test_loudnorm_runs_on_the_source_s_audio_and_the_clip_is_back_at_48_khz():
    graph = clip_graph(loudnorm_arguments(measured(), LoudnessSpec()))
    assert graph.count("loudnorm=") == 1
    assert audio_chain(graph, "[2:a:0]") == ["aformat", "loudnorm", "aformat", "asetpts", "concat"]
    assert "measured_I=-23.97" in graph
    # The cards' silence never passes through it.
    assert "loudnorm" not in audio_chain(graph, "[1]")
