"""The scene-cut pass: its command and the reading of its output (no ffmpeg run)."""

from __future__ import annotations

from pathlib import Path

from services.transcoder.hardening import DecodeLimits
from services.transcoder.scenes import SCENE_THRESHOLD, build_detect_command, parse_cuts
from tests.support.media import source_info

# What ``metadata=print`` wrote for a source with cuts at 7, 16 and 29 s (30 fps).
CAPTURED = """\
frame:210  pts:107520  pts_time:7
lavfi.scd.time=7
frame:480  pts:245760  pts_time:16
lavfi.scd.time=16
frame:870  pts:445440  pts_time:29
lavfi.scd.time=29
"""

INFO = source_info(
    container="mov,mp4,m4a,3gp,3g2,mj2",
    size_bytes=1000,
    duration=35.0,
    video_stream=1,
    decode=DecodeLimits(max_width=3840, max_height=2160, memory_bytes=2**31),
)


def test_parse_reads_the_cut_times_of_captured_output():
    assert parse_cuts(CAPTURED) == (7.0, 16.0, 29.0)


def test_parse_reads_fractional_times_and_sorts_them_once_each():
    text = "lavfi.scd.time=12.3456\nlavfi.scd.time=3.04\nlavfi.scd.time=3.04\n"
    assert parse_cuts(text) == (3.04, 12.3456)


def test_parse_ignores_other_lines_starts_and_values_that_are_not_times():
    text = (
        "frame:0 pts:0 pts_time:0\n"
        "lavfi.scd.time=0\n"  # the first frame is no cut
        "lavfi.scd.score=41.9\n"
        "lavfi.scd.time=nan\n"
        "lavfi.scd.time=N/A\n"
        "lavfi.scd.time=-1\n"
        "  lavfi.scd.time=5.5  \n"
    )
    assert parse_cuts(text) == (5.5,)
    assert parse_cuts("") == ()


def test_the_pass_reads_the_video_stream_only_under_the_source_limits(tmp_path):
    args = build_detect_command(Path("/in/source.mp4"), INFO, tmp_path / "cuts.txt")
    assert args[0] == "ffmpeg"
    assert args[args.index("-protocol_whitelist") + 1] == "file"
    assert "-codec_whitelist" in args and "-format_whitelist" in args
    assert args[args.index("-max_pixels") + 1] == str(3840 * 2160)
    assert args[args.index("-i") + 1] == "file:/in/source.mp4"
    assert args.index("-skip_loop_filter") < args.index("-i")  # a decoder option
    graph = args[args.index("-filter_complex") + 1]
    assert graph.startswith("[0:1]scale=160:90")
    assert f"scdet=sc_pass=0:threshold={SCENE_THRESHOLD}" in graph
    assert "format=gray" in graph and str(tmp_path / "cuts.txt") in graph
    assert {"-an", "-sn", "-dn"} <= set(args) and args[args.index("-f") + 1] == "null"
    assert "fps" not in graph  # every source frame is scored, so a cut is placed to the frame


def test_a_window_is_read_by_input_seeking(tmp_path):
    args = build_detect_command(
        Path("/in/source.mp4"), INFO, tmp_path / "cuts.txt", start=14.75, seconds=5.25
    )
    assert args[args.index("-ss") + 1] == "14.750000" and args[args.index("-t") + 1] == "5.250000"
    assert args.index("-ss") < args.index("-i") and args.index("-t") < args.index("-i")
    assert "-ss" not in build_detect_command(Path("/in/source.mp4"), INFO, tmp_path / "cuts.txt")
