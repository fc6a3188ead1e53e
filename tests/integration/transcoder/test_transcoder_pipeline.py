"""The clip pipeline with real ffmpeg: what a clip is (DESIGN section 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips
from services.transcoder.probe import SourceLimits, probe_source
from shared.events import ClipSpec
from tests.support.media import (
    bright_blob,
    ffprobe,
    frame_pixels,
    make_rotated_portrait,
    make_video,
    max_volume_db,
    mean_abs_diff,
    top_level_boxes,
)

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
FRAME = 1 / 30


def make_clips(source: Path, workdir: Path, spec: ClipSpec = ClipSpec(), **kwargs):
    info = probe_source(source, LIMITS)
    return list(iter_clips(source, info, spec, workdir=workdir, ffmpeg_timeout=300, **kwargs))


@pytest.fixture(scope="module")
def landscape_clip(tmp_path_factory):
    """One 3 s part of a 320x240 source with audio, made with the default spec."""
    scratch = tmp_path_factory.mktemp("landscape")
    source = make_video(scratch / "source.mp4", seconds=3, audio=True)
    progress: list[float] = []
    clips = make_clips(source, scratch, on_progress=progress.append)
    assert len(clips) == 1
    return clips[0], progress


def test_clip_geometry_codecs_and_rate(landscape_clip):
    clip, _ = landscape_clip
    probe = ffprobe(clip.path)
    videos = [s for s in probe["streams"] if s["codec_type"] == "video"]
    audios = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(videos) == 1 and len(audios) == 1
    video, audio = videos[0], audios[0]
    assert (video["width"], video["height"]) == (1280, 720)
    assert video["sample_aspect_ratio"] == "1:1"
    assert video["display_aspect_ratio"] == "16:9"
    assert video["codec_name"] == "h264" and video["pix_fmt"] == "yuv420p"
    assert video["r_frame_rate"] == "30/1" and video["avg_frame_rate"] == "30/1"
    assert int(video["nb_frames"]) == round(float(video["duration"]) * 30)  # constant rate
    assert audio["codec_name"] == "aac"
    assert int(audio["sample_rate"]) == 48000 and audio["channels"] == 2
    assert "side_data_list" not in video  # no rotation left for players to apply
    assert "major_brand" in probe["format"]["tags"]


def test_clip_lasts_part_plus_two_cards_within_a_frame(landscape_clip):
    clip, _ = landscape_clip
    probe = ffprobe(clip.path)
    assert abs(float(probe["format"]["duration"]) - 5.0) <= FRAME
    for stream in probe["streams"]:
        assert abs(float(stream["duration"]) - 5.0) <= FRAME, stream["codec_type"]
    assert abs(clip.duration_seconds - 5.0) <= FRAME


def test_moov_is_before_mdat(landscape_clip):
    clip, _ = landscape_clip
    boxes = top_level_boxes(clip.path)
    assert boxes.index("moov") < boxes.index("mdat")


def test_first_and_last_second_show_the_logo_card(landscape_clip, tmp_path):
    clip, _ = landscape_clip
    logo = frame_pixels(DEFAULT_LOGO, 0, 128, 72)
    for at in (0.1, 0.9, 4.1, 4.9):
        assert mean_abs_diff(frame_pixels(clip.path, at, 128, 72), logo) < 6, at
    assert mean_abs_diff(frame_pixels(clip.path, 2.5, 128, 72), logo) > 30


def test_cards_are_silent_and_the_part_keeps_its_sound(landscape_clip):
    clip, _ = landscape_clip
    assert max_volume_db(clip.path, 0.0, 0.9) < -80
    assert max_volume_db(clip.path, 4.1, 0.9) < -80
    assert max_volume_db(clip.path, 1.5, 2.0) > -30


def test_poster_is_a_jpeg_frame_of_the_part(landscape_clip):
    clip, _ = landscape_clip
    assert clip.poster_path.read_bytes()[:3] == b"\xff\xd8\xff"
    poster = ffprobe(clip.poster_path)["streams"][0]
    assert (poster["codec_name"], poster["width"], poster["height"]) == ("mjpeg", 1280, 720)
    logo = frame_pixels(DEFAULT_LOGO, 0, 128, 72)
    assert mean_abs_diff(frame_pixels(clip.poster_path, 0, 128, 72), logo) > 30


def test_progress_is_reported_and_grows(landscape_clip):
    _, progress = landscape_clip
    assert progress, "no progress was reported"
    assert progress == sorted(progress)
    assert progress[-1] == pytest.approx(100, abs=1)


def test_silent_source_gets_one_silent_audio_stream(tmp_path):
    source = make_video(tmp_path / "silent.mp4", seconds=2, audio=False)
    (clip,) = make_clips(source, tmp_path, ClipSpec(width=320, height=180))
    audios = [s for s in ffprobe(clip.path)["streams"] if s["codec_type"] == "audio"]
    assert len(audios) == 1
    assert (audios[0]["codec_name"], audios[0]["channels"]) == ("aac", 2)
    assert abs(float(audios[0]["duration"]) - 4.0) <= FRAME
    assert max_volume_db(clip.path, 0, 4) < -80


def _disc_in(clip_path: Path, at: float):
    frame = frame_pixels(clip_path, at, 1280, 720)
    return frame, bright_blob(frame, 1280)


@pytest.mark.parametrize(
    "fit, diameter, bars",
    [
        ("pad", 360, True),  # 320x240 -> 960x720 + bars: r 60 -> 180
        ("crop", 480, False),  # 320x240 -> 1280x960, centre 720 rows kept: r 60 -> 240
    ],
)
def test_a_circle_stays_round(tmp_path, fit, diameter, bars):
    source = make_video(tmp_path / "disc.mp4", seconds=1, disc=(160, 120, 60), audio=False)
    (clip,) = make_clips(source, tmp_path, ClipSpec(fit=fit))
    frame, disc = _disc_in(clip.path, 1.5)
    assert abs(disc.width - disc.height) <= 4, disc
    assert abs(disc.width - diameter) <= 6, disc
    assert disc.center == pytest.approx((640, 360), abs=3)
    left_column = frame[100 * 1280 : 100 * 1280 + 100]
    if bars:
        assert max(left_column) < 40  # black bar
    else:
        assert min(left_column) > 100  # the grey background fills the frame


def test_rotated_portrait_comes_out_upright(tmp_path):
    source = make_rotated_portrait(tmp_path / "phone.mp4", tmp_path)
    info = probe_source(source, LIMITS)
    assert (info.width, info.height, info.rotation) == (320, 180, 90)
    assert (info.display_width, info.display_height) == (180, 320)
    (clip,) = make_clips(source, tmp_path)
    frame, disc = _disc_in(clip.path, 1.5)
    # Upright 180x320 scaled to 720 rows (x2.25): disc r 40 -> 90, centred at x 640, y 180.
    assert abs(disc.width - disc.height) <= 4, disc
    assert abs(disc.width - 180) <= 6, disc
    assert disc.center == pytest.approx((640, 180), abs=4)
    assert max(frame[360 * 1280 : 360 * 1280 + 200]) < 40  # pillarbox bar on the left


def test_45_seconds_make_three_clips_of_20_20_and_5(tmp_path):
    source = make_video(tmp_path / "long.mp4", width=160, height=90, seconds=45, audio=True)
    clips = make_clips(source, tmp_path, ClipSpec(width=320, height=180, preset="ultrafast"))
    assert [c.part.index for c in clips] == [1, 2, 3]
    assert [c.part.duration for c in clips] == [20, 20, 5]
    for clip, expected in zip(clips, (22, 22, 7)):
        probe = ffprobe(clip.path)
        assert abs(float(probe["format"]["duration"]) - expected) <= FRAME
        assert clip.path.name == f"part-{clip.part.index:02d}.mp4"
    # The second clip starts where the first ended: its first content frame is 20 s in.
    first_of_second = frame_pixels(clips[1].path, 1 + FRAME / 2, 160, 90)
    twenty_in = frame_pixels(source, 20 + FRAME / 2, 160, 90)
    ten_in = frame_pixels(source, 10 + FRAME / 2, 160, 90)
    assert mean_abs_diff(first_of_second, twenty_in) < mean_abs_diff(first_of_second, ten_in)
