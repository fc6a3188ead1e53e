"""Scene-aware parts with real ffmpeg: cuts found where the shots change, parts ending on
them, clips of those parts, and a source without cuts split as before."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.errors import PermanentFailure, ProcessingStopped
from services.transcoder.pipeline import iter_clips
from services.transcoder.plan import plan_parts, plan_scene_parts
from services.transcoder.probe import SourceLimits, probe_source
from services.transcoder.runner import StopSignal
from services.transcoder.scenes import detect_cuts
from shared.events import ClipSpec
from tests.support.media import FAST_H264, ffmpeg, frame_pixels, make_shots, make_video, mean_abs_diff

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
FRAME = 1 / 30
# Small, quick clips: the test is about where the parts end, not about the picture.
SCENES = ClipSpec(split="scenes", width=320, height=180, preset="ultrafast")
# Shots of 7, 9, 13, 6 and 5 s: cuts at 7, 16, 29 and 35 s. With 20 s parts and a 5 s
# window the first boundary moves back from 20 to 16, the second from 36 to 35; the
# cuts at 7 and 29 lie outside every window.
SHOTS = (7, 9, 13, 6, 5)
CUTS = (7, 16, 29, 35)
PARTS = [(0, 16), (16, 19), (35, 5)]


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    return make_shots(tmp_path_factory.mktemp("shots") / "shots.mp4", SHOTS)


def test_detection_finds_each_hard_cut_to_the_frame(shots):
    info = probe_source(shots, LIMITS)
    cuts = detect_cuts(shots, info, timeout=120)
    assert len(cuts) == len(CUTS), cuts
    for found, made in zip(cuts, CUTS):
        assert abs(found - made) <= FRAME


def test_searching_only_the_windows_finds_the_same_cuts_and_plan(shots):
    info = probe_source(shots, LIMITS)
    asked: list[tuple[float, ...]] = []

    def find_cuts(start: float, seconds: float) -> tuple[float, ...]:
        asked.append(cuts := detect_cuts(shots, info, timeout=120, start=start, seconds=seconds))
        return cuts

    parts = plan_scene_parts(info.duration, SCENES, find_cuts)
    assert parts == plan_parts(info.duration, SCENES, detect_cuts(shots, info, timeout=120))
    found = sum(asked, ())
    assert len(asked) == 2 and len(found) == 2
    assert all(abs(cut - made) <= FRAME for cut, made in zip(found, (16, 35)))


def test_parts_from_real_detection_end_on_the_cuts_and_their_clips_last_as_planned(shots, tmp_path):
    info = probe_source(shots, LIMITS)
    parts = plan_parts(info.duration, SCENES, detect_cuts(shots, info, timeout=120))
    assert len(parts) == len(PARTS)
    for part, (start, seconds) in zip(parts, PARTS):
        assert abs(part.start - start) <= FRAME and abs(part.duration - seconds) <= FRAME
        assert part.duration <= SCENES.max_part_seconds

    clips = list(iter_clips(shots, info, SCENES, workdir=tmp_path, ffmpeg_timeout=300))
    assert [clip.part for clip in clips] == parts
    for clip in clips:
        assert abs(clip.duration_seconds - (clip.part.duration + 2 * SCENES.card_seconds)) <= FRAME

    # The second clip opens on the new shot's first frame, not on the last one before it
    # (a seek shows the first frame at or after its time).
    width, height = 64, 36
    opening = frame_pixels(clips[1].path, SCENES.card_seconds, width, height)
    new_shot = frame_pixels(shots, 16, width, height)
    old_shot = frame_pixels(shots, 16 - 1.5 * FRAME, width, height)
    assert mean_abs_diff(opening, new_shot) < 10 < 30 < mean_abs_diff(opening, old_shot)


@pytest.mark.parametrize(
    "video",
    [
        "testsrc2=s=320x180:r=30:d=45",  # moving pattern
        "testsrc2=s=1600x180:r=30:d=45,crop=320:180:x='t*28':y=0",  # a smooth pan
    ],
    ids=["motion", "pan"],
)
def test_a_source_without_cuts_splits_every_max_part_seconds(tmp_path, video):
    source = tmp_path / "one-shot.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        video,
        *FAST_H264,
        str(source),
    )
    info = probe_source(source, LIMITS)
    cuts = detect_cuts(source, info, timeout=120)
    assert cuts == ()
    assert plan_parts(info.duration, SCENES, cuts) == plan_parts(info.duration, ClipSpec())


def test_a_source_that_cannot_be_decoded_fails_detection_clearly(tmp_path):
    source = make_video(tmp_path / "source.mp4", seconds=3, width=320, height=180, audio=False)
    info = probe_source(source, LIMITS)
    source.write_bytes(source.read_bytes()[: source.stat().st_size // 2])  # cut short after the probe
    with pytest.raises(PermanentFailure, match="the source could not be decoded"):
        detect_cuts(source, info, timeout=120)


def test_a_set_stop_ends_detection_before_it_runs(shots):
    info = probe_source(shots, LIMITS)
    stop = StopSignal()
    stop.set("canceled")
    with pytest.raises(ProcessingStopped):
        detect_cuts(shots, info, timeout=120, stop=stop)
