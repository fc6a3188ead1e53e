"""Which sources are cut into segments, and the cut's command: built, not run."""

from pathlib import Path

import pytest

from services.transcoder.segments import build_cut_command, can_segment
from tests.support.media import source_info as info


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({}, True),
        ({"video_codec": "hevc"}, True),
        ({"video_codec": "qtrle"}, False),  # its bits per pixel do not survive the copy
        ({"video_codec": "cinepak"}, False),  # not checked: the whole source
        ({"rotation": 90}, False),  # Matroska would lose the rotation
    ],
)
def test_a_source_is_cut_only_where_its_video_survives_the_copy(changes, expected):
    assert can_segment(info(**changes)) is expected


def test_the_cut_copies_the_part_s_video_and_first_audio_on_the_source_s_own_timeline():
    args = build_cut_command(
        Path("/scratch/source"), info(video_stream=1), 21.5, 42.5, Path("/scratch/seg.mkv")
    )
    source = args.index("file:/scratch/source")
    before = args[:source]
    assert before[before.index("-ss") + 1] == "21.500000" and "-seek_timestamp" in before
    assert before[before.index("-protocol_whitelist") + 1] == "file"
    assert "-copyts" in args
    after = args[source:]
    assert after[after.index("-c") + 1] == "copy" and after[after.index("-to") + 1] == "42.500000"
    assert after[after.index("-avoid_negative_ts") + 1] == "disabled"
    maps = [after[i + 1] for i, arg in enumerate(after) if arg == "-map"]
    assert maps == ["0:1", "0:a:0"]
    assert "/scratch/seg.mkv" in after


def test_a_cut_from_the_source_s_start_does_not_seek():
    args = build_cut_command(
        Path("/scratch/source"), info(has_audio=False), None, 21.0, Path("/scratch/seg.mkv")
    )
    assert "-ss" not in args
    assert [args[i + 1] for i, arg in enumerate(args) if arg == "-map"] == ["0:0"]
