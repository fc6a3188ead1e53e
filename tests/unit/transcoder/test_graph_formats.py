"""The command of a part made in several formats: one decode, a branch per format, a
clip, poster and preview each (built, not run)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.transcoder.graph import FormatFiles, build_part_command, preview_size
from services.transcoder.plan import Frame, Part, clip_frames
from shared.events import ClipSpec, FormatSpec

# The source's facts and the input-options reader of the single-format tests.
from tests.support.media import source_info as info
from tests.unit.transcoder.test_transcoder_graph import options_before

SOURCE = Path("/scratch/source")
THREE = (FormatSpec(format="16:9"), FormatSpec(format="9:16", fit="crop"), FormatSpec(format="1:1"))


def files(name: str) -> FormatFiles:
    return FormatFiles(
        Path(f"/scratch/{name}.mp4"), Path(f"/scratch/{name}.jpg"), Path(f"/scratch/{name}-p.mp4")
    )


def command(spec=ClipSpec(formats=THREE), cards=None, **changes):
    names = {"16:9": "w", "9:16": "v", "1:1": "s"}
    frames = clip_frames(spec)
    return build_part_command(
        SOURCE,
        info(**changes),
        Part(1, 0.0, 10.0),
        spec,
        {frame.format: files(names[frame.format]) for frame in frames},
        cards=cards or {frame.format: Path(f"/assets/{names[frame.format]}.png") for frame in frames},
    )


def graph_of(args: list[str]) -> str:
    return args[args.index("-filter_complex") + 1]


def test_no_formats_is_the_one_16_9_frame_of_the_spec():
    assert clip_frames(ClipSpec(fit="crop", width=640, height=360)) == (Frame("16:9", 640, 360, "crop"),)
    assert clip_frames(ClipSpec(formats=THREE, width=640, height=360)) == (
        Frame("16:9", 640, 360, "pad"),
        Frame("9:16", 720, 1280, "crop"),
        Frame("1:1", 1080, 1080, "pad"),
    )
    with pytest.raises(ValueError, match="more than once"):
        clip_frames(ClipSpec(formats=(FormatSpec(format="1:1"), FormatSpec(format="1:1", fit="crop"))))


def test_the_part_is_decoded_once_and_split_into_one_branch_per_format():
    cmd = command()
    args = cmd.args
    assert args.count("file:/scratch/source") == 1 and args.count("-filter_complex") == 1
    graph = graph_of(args)
    assert graph.count("fps=30") == 1
    assert re.search(r"fps=30\[(s\d+)\];\[\1\]split=3", graph)
    # Each branch is fitted to its own frame: 1920x1080 padded into 16:9 and 1:1, cropped into 9:16.
    assert "zscale=filter=bicubic:h=720:w=1280" in graph and "pad=1280:720:0:0" in graph
    assert "zscale=filter=bicubic:h=1280:w=2276" in graph and "crop=720:1280:778:0" in graph
    assert "zscale=filter=bicubic:h=608:w=1080" in graph and "pad=1080:1080:0:236" in graph
    assert graph.count("concat=a=1:n=3:v=1") == 3
    # One clip (video + audio), one poster and one preview per format.
    assert args.count("-map") == 3 * 4
    for name in ("w", "v", "s"):
        for path in (f"/scratch/{name}.mp4", f"/scratch/{name}.jpg", f"/scratch/{name}-p.mp4"):
            assert args.count(path) == 1
    assert set(cmd.files) == {"16:9", "9:16", "1:1"}
    assert cmd.clip_path == Path("/scratch/w.mp4") and cmd.expected_seconds == pytest.approx(12.0)


def test_the_content_audio_is_made_once_and_split_per_format():
    graph = graph_of(command().args)
    source_audio = re.findall(r"\[\d+:a:0\]", graph)
    assert len(source_audio) == 1
    assert re.search(r"asetpts=PTS-STARTPTS\[(s\d+)\];\[\1\]asplit=3", graph)
    assert "asplit=6" in graph  # the cards' silences: two per format
    silent = graph_of(command(has_audio=False).args)
    assert "asplit=9" in silent and not re.search(r"\[\d+:a:0\]", silent)


def test_each_format_has_its_own_card_image_fitted_to_its_frame():
    cards = {
        "16:9": Path("/cards/wide.png"),
        "9:16": Path("/cards/tall.png"),
        "1:1": Path("/cards/square.png"),
    }
    cmd = command(cards=cards)
    for card in cards.values():
        assert options_before(cmd.args, f"file:{card}")["-f"] == "image2"
    graph = graph_of(cmd.args)
    for width, height in ((1280, 720), (720, 1280), (1080, 1080)):
        assert f"scale={width}:{height}:force_original_aspect_ratio=decrease" in graph
        assert f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2" in graph


def test_a_format_without_its_files_or_card_is_refused():
    spec = ClipSpec(formats=THREE)
    with pytest.raises(ValueError):
        command(spec, cards={"16:9": Path("/a.png")})


def test_the_preview_is_small_silent_and_capped():
    args = command().args
    at = args.index("/scratch/v-p.mp4")
    start = max(i for i in range(at) if args[i] == "-map")
    options = dict(zip(args[start:at:2], args[start + 1 : at : 2]))
    assert options["-maxrate"] == options["-bufsize"] == "700k"
    assert options["-movflags"] == "+faststart" and "-acodec" not in options
    graph = graph_of(args)
    assert "trim=duration=3.000:start=1.000" in graph
    assert "scale=270:480" in graph and "scale=480:270" in graph and "scale=480:480" in graph
    assert preview_size(1280, 720) == (480, 270)
    assert preview_size(320, 180) == (320, 180)  # never enlarged
