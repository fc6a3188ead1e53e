"""The clip command for HDR sources, full-range sources and unnamed audio channels:
built, not run (the pictures and sounds are checked in
tests/integration/transcoder/test_transcoder_color_and_channels.py)."""

import re
from pathlib import Path

import pytest

from services.transcoder.graph import build_clip_command
from services.transcoder.plan import Part
from services.transcoder.probe import SourceLimits, describe_source
from shared.events import ClipSpec
from tests.support.media import source_info

# A 4K HEVC source; the rest as tests.support.media.source_info has it.
BASE = dict(width=3840, height=2160, display_width=3840, display_height=2160, video_codec="hevc")
HLG = dict(color_transfer="arib-std-b67", color_primaries="bt2020", color_space="bt2020nc", color_range="tv")


def args(**changes) -> list[str]:
    return build_clip_command(
        Path("/scratch/source"),
        source_info(**(BASE | changes)),
        Part(1, 0.0, 20.0),
        ClipSpec(),
        Path("/assets/logo.png"),
        Path("/scratch/part-01.mp4"),
        Path("/scratch/part-01.jpg"),
    ).args


def graph(**changes) -> str:
    built = args(**changes)
    return built[built.index("-filter_complex") + 1]


def chain(filter_graph: str, source: str) -> list[str]:
    """The filters (``name=arguments``) that follow the pad ``source`` one after the
    other, up to the first that splits."""
    by_input = {}
    for step in filter_graph.split(";"):
        match = re.fullmatch(r"\[([^]]+)\]([^[]+)((?:\[[^]]+\])+)", step)
        if match:
            by_input[match[1]] = (match[2], re.findall(r"\[([^]]+)\]", match[3]))
    steps = []
    while source in by_input:
        name, outputs = by_input[source]
        steps.append(name)
        if len(outputs) != 1:
            break
        source = outputs[0]
    return steps


def test_an_sdr_source_keeps_the_one_scaling_step():
    sdr = graph(color_transfer="bt709", color_primaries="bt709", color_space="bt709")
    assert chain(sdr, "2:0") == [
        "fps=30",
        "zscale=filter=bicubic:h=720:w=1280",
        "pad=1280:720:0:0:color=black",
        "setsar=1",
        "format=yuv420p",
        "setpts=PTS-STARTPTS",
        "split=2",
    ]
    for hdr_only in ("tonemap", "gbrpf32le", "linear", "npl"):
        assert hdr_only not in sdr
    assert graph() == graph(color_transfer="smpte170m", color_range="tv") == sdr


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084"])
def test_an_hdr_source_is_scaled_in_linear_light_then_tone_mapped(transfer):
    hdr = graph(**(HLG | {"color_transfer": transfer}))
    assert chain(hdr, "2:0") == [
        "fps=30",
        "zscale=filter=bicubic:h=720:matrixin=bt2020nc:npl=100:p=bt709:primariesin=bt2020"
        f":rangein=tv:t=linear:transferin={transfer}:w=1280",
        "format=gbrpf32le",
        "tonemap=mobius:desat=0",
        "zscale=m=bt709:r=tv:t=bt709",
        "format=yuv420p",
        "pad=1280:720:0:0:color=black",
        "setsar=1",
        "format=yuv420p",
        "setpts=PTS-STARTPTS",
        "split=2",  # the clip body and the poster: one tone mapping serves both
    ]
    assert hdr.count("tonemap") == 1


def test_an_hdr_source_with_missing_tags_is_read_as_bt2020():
    hdr = graph(color_transfer="arib-std-b67", color_primaries="", color_space="", color_range="")
    assert "matrixin=bt2020nc" in hdr and "primariesin=bt2020" in hdr and "rangein=tv" in hdr
    full = graph(**(HLG | {"color_range": "pc", "color_space": "bt2020c"}))
    assert "rangein=pc" in full and "matrixin=bt2020c" in full


def test_a_full_range_sdr_source_is_brought_to_limited_range():
    assert "]zscale=filter=bicubic:h=720:r=tv:w=1280[" in graph(color_range="pc")


@pytest.mark.parametrize("pixel_format", ["rgb24", "bgra", "gbrp10le", "bgr0", "pal8", "x2rgb10le"])
def test_an_rgb_source_is_converted_to_bt709_limited_range(pixel_format):
    assert "]zscale=filter=bicubic:h=720:m=bt709:r=tv:w=1280[" in graph(
        pixel_format=pixel_format, color_range="pc"
    )


@pytest.mark.parametrize("pixel_format", ["yuv420p", "yuv422p10le", "gray", "nv12"])
def test_a_yuv_or_grey_source_keeps_its_matrix(pixel_format):
    assert "]zscale=filter=bicubic:h=720:w=1280[" in graph(pixel_format=pixel_format)


@pytest.mark.parametrize("changes", [{}, HLG, {"color_range": "pc"}])
def test_every_clip_is_tagged_bt709_limited_range(changes):
    joined = " ".join(args(**changes))
    for tag in ("-color_primaries bt709", "-color_trc bt709", "-colorspace bt709", "-color_range tv"):
        assert tag in joined
    # The card's RGB logo is converted with the matrix the tag names.
    assert "out_color_matrix=bt709:out_range=tv" in graph(**changes)


@pytest.mark.parametrize(
    "channels, layout, first_two",
    [
        (32, "", True),
        (9, "", True),
        (8, "", False),  # ffmpeg guesses 7.1 and downmixes it
        (6, "", False),  # ... 5.1, its centre kept in both sides
        (3, "", False),
        (6, "5.1(side)", False),  # a named layout: aformat's downmix, as before
        (2, "", False),
        (1, "", False),  # ffmpeg reads it as mono: both sides
        (0, "", False),  # ffprobe gave no count: left to ffmpeg
    ],
)
def test_unnamed_channels_past_ffmpegs_guesses_keep_the_first_two(channels, layout, first_two):
    steps = chain(graph(audio_channels=channels, audio_layout=layout), "2:a:0")
    stereo = ["aformat=channel_layouts=stereo:sample_fmts=fltp:sample_rates=48000", "asetpts=PTS-STARTPTS"]
    if first_two:
        assert steps[:1] == ["channelmap=channel_layout=stereo:map=0|1"]
        steps = steps[1:]
    assert steps[:2] == stereo


def test_a_silent_source_has_no_channel_step():
    assert "channelmap" not in graph(has_audio=False, audio_channels=32)


LIMITS = SourceLimits(max_bytes=10**9, max_seconds=600, max_width=3840, max_height=2160)


def _probe(video: dict, audio: dict) -> dict:
    video = {
        "index": 0,
        "codec_type": "video",
        "codec_name": "hevc",
        "width": 1920,
        "height": 1080,
        "avg_frame_rate": "30/1",
        "duration": "3",
    } | video
    audio = {"index": 1, "codec_type": "audio", "codec_name": "pcm_s16le"} | audio
    return {"streams": [video, audio], "format": {"duration": "3", "format_name": "matroska"}}


def test_the_probe_reads_the_colour_and_the_channels():
    info = describe_source(
        _probe(
            {
                "color_transfer": "arib-std-b67",
                "color_primaries": "bt2020",
                "color_space": "bt2020nc",
                "color_range": "tv",
            },
            {"channels": 6, "channel_layout": "5.1(side)"},
        ),
        1,
        LIMITS,
    )
    assert (info.color_transfer, info.color_primaries, info.color_space, info.color_range) == (
        "arib-std-b67",
        "bt2020",
        "bt2020nc",
        "tv",
    )
    assert (info.audio_channels, info.audio_layout) == (6, "5.1(side)")


def test_what_ffprobe_cannot_name_is_empty():
    info = describe_source(
        _probe(
            {"color_transfer": "unknown", "color_range": "unknown"},
            {"channels": 32},
        ),
        1,
        LIMITS,
    )
    assert (info.color_transfer, info.color_primaries, info.color_space, info.color_range) == ("", "", "", "")
    assert (info.audio_channels, info.audio_layout) == (32, "")
    mono = describe_source(_probe({}, {"channels": 1, "channel_layout": "unknown"}), 1, LIMITS)
    assert (mono.audio_channels, mono.audio_layout) == (1, "")
