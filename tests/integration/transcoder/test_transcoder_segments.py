"""Parts made from their own segments of the source (``segments.py``), with real ffmpeg:
the frames of a run over the whole source, joined frame-exactly, from a segment that
holds about its part only."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.transcoder.pipeline import DEFAULT_LOGO, LocalClip, iter_clips, make_part, plan_task
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.segments import Segment, cut_segments
from shared.events import ClipSpec
from tests.support.media import grey_levels, make_level_source

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
FPS = 30
SECONDS = 50  # parts of 20, 20 and 10 s
GOP = 70  # frames between keyframes: parts 2 and 3 start between two
LEVELS = 50
SPEC = ClipSpec(width=320, height=180, preset="ultrafast", crf=10)
CARD_FRAMES = FPS  # one second of card at each end
CONTAINERS = ("mp4", "mpegts")


def _make_source(path: Path, container: str) -> Path:
    return make_level_source(path, container, seconds=SECONDS, fps=FPS, gop=GOP, levels=LEVELS)


def _frame_hashes(clip: Path) -> list[str]:
    lines = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(clip), "-map", "0:v", "-f", "framemd5", "-"],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.splitlines()
    return [line.rsplit(",", 1)[-1].strip() for line in lines if not line.startswith("#")]


def _keyframes(video: Path) -> list[float]:
    packets = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags"]
        + ["-of", "csv=p=0", str(video)],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split()
    return [float(line.split(",")[0]) for line in packets if "K" in line.split(",")[1]]


@dataclass(frozen=True)
class Made:
    source: Path
    info: SourceInfo
    segments: list[Segment]
    from_segments: list[LocalClip]  # each part from its segment, in a folder of its own
    whole: list[LocalClip]  # each part from the whole source (MP4 only)
    pipeline: list[LocalClip]  # iter_clips, as the worker makes them


@pytest.fixture(scope="module", params=CONTAINERS)
def made(request, tmp_path_factory) -> Made:
    folder = tmp_path_factory.mktemp(f"segments-{request.param}")
    source = _make_source(folder / f"levels.{request.param}", request.param)
    info = probe_source(source, LIMITS)
    parts = plan_task(source, info, SPEC, ffmpeg_timeout=300)
    cards = {"16:9": DEFAULT_LOGO}
    segments = cut_segments(source, info, parts, tmp_path_factory.mktemp("cut"), timeout=60)
    from_segments, whole = [], []
    for segment in segments:
        from_segments += make_part(
            segment.path,
            segment.info,
            segment.part,
            SPEC,
            workdir=tmp_path_factory.mktemp(f"worker-{segment.part.index}"),
            cards=cards,
            ffmpeg_timeout=300,
            seek_to=segment.seek_to,
        )
        if request.param == "mp4":  # the reference (see the test that uses it)
            whole += make_part(
                source,
                info,
                segment.part,
                SPEC,
                workdir=tmp_path_factory.mktemp("whole"),
                cards=cards,
                ffmpeg_timeout=300,
            )
    pipeline = list(
        iter_clips(source, info, SPEC, workdir=tmp_path_factory.mktemp("pipeline"), ffmpeg_timeout=300)
    )
    return Made(source, info, segments, from_segments, whole, pipeline)


def test_a_segment_starts_on_a_keyframe_before_its_part_which_does_not_start_on_one(made):
    keyframes = _keyframes(made.source)
    assert [segment.part.index for segment in made.segments] == [1, 2, 3]
    for segment in made.segments[1:]:
        assert all(abs(segment.seek_to - keyframe) > 0.01 for keyframe in keyframes)
        assert segment.keyframe <= segment.seek_to
        assert any(keyframe == pytest.approx(segment.keyframe, abs=0.002) for keyframe in keyframes)
        assert _keyframes(segment.path)[0] == pytest.approx(segment.keyframe, abs=0.002)
        if made.source.suffix == ".mp4":  # a demuxer that seeks exactly: the last keyframe before
            last = max(keyframe for keyframe in keyframes if keyframe <= segment.seek_to)
            assert segment.keyframe == pytest.approx(last, abs=0.002)


def test_a_segment_holds_about_its_part_only(made):
    total = made.source.stat().st_size
    for segment in made.segments:
        # Its part, what lies before it back to the segment's keyframe, and a second after.
        seconds = segment.part.duration + (segment.seek_to - segment.keyframe) + 1.0
        assert segment.path.stat().st_size < total * seconds / SECONDS + 64 * 1024


def test_consecutive_clips_join_with_no_missing_or_repeated_frame(made):
    """The clips' content, end to end, is every frame of the source once, in order."""
    expected = grey_levels(made.source)
    assert len(expected) == SECONDS * FPS
    # Neighbouring frames of the source are 4 levels apart (4.7 once read in full range).
    assert len(set(expected[:LEVELS])) == LEVELS
    for clips in (made.from_segments, made.pipeline):
        content: list[int] = []
        for clip in clips:
            content += grey_levels(clip.path)[CARD_FRAMES:-CARD_FRAMES]
        assert len(content) == len(expected)
        wrong = [i for i, (got, want) in enumerate(zip(content, expected)) if abs(got - want) > 1]
        assert not wrong, f"frames {wrong[:5]} differ from the source's"


def test_the_pipeline_makes_each_later_part_from_its_segment(made):
    """The first part starts with the source and reads it whole; the later ones are
    made from their segments."""
    assert [clip.part for clip in made.pipeline] == [clip.part for clip in made.from_segments]
    for ours, theirs in zip(made.pipeline, made.from_segments):
        assert _frame_hashes(ours.path) == _frame_hashes(theirs.path), f"part {ours.part.index}"


@pytest.mark.parametrize("made", ["mp4"], indirect=True)
def test_from_an_mp4_every_clip_has_the_frames_of_a_run_on_the_whole_source(made):
    """MP4's demuxer seeks exactly, so a run on the whole source is the reference. An
    MPEG-TS demuxer can seek past a part's start: the join test holds those clips to the
    source's own frames instead."""
    for ours, single in zip(made.from_segments, made.whole, strict=True):
        assert _frame_hashes(ours.path) == _frame_hashes(single.path), f"part {ours.part.index}"
        assert abs(ours.duration_seconds - single.duration_seconds) < 1 / FPS
