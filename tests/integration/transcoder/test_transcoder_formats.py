"""Every format from one ffmpeg run per part, with real ffmpeg: each format's frame,
rate, cards, sound and geometry, and each clip's poster and animated preview."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.graph import PREVIEW_MAX_BYTES, PREVIEW_SECONDS
from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips
from services.transcoder.probe import SourceLimits, probe_source
from shared.events import ClipSpec, FormatSpec
from tests.support.media import bright_blob, ffmpeg, ffprobe, frame_pixels, make_video, mean_abs_diff

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
FRAME = 1 / 30
SIZES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1080, 1080)}
# The 320x240 source's disc (diameter 120) in each frame: scaled to fit inside (pad) or
# to cover (crop) the frame.
DISC_DIAMETERS = {
    ("16:9", "pad"): 360,  # x3
    ("16:9", "crop"): 480,  # x4
    ("9:16", "pad"): 270,  # x2.25
    ("9:16", "crop"): 640,  # x5.33
    ("1:1", "pad"): 405,  # x3.375
    ("1:1", "crop"): 540,  # x4.5
}


def _spec(fit: str, **changes) -> ClipSpec:
    formats = tuple(FormatSpec(format=name, fit=fit) for name in SIZES)
    return ClipSpec(formats=formats, preset="ultrafast", **changes)


@pytest.fixture(scope="module", params=["pad", "crop"])
def made(request, tmp_path_factory):
    """One 4 s part of a 320x240 source (a still white disc on grey, with a tone) made in
    the three formats with one fit: the clips by format, and the fit."""
    scratch = tmp_path_factory.mktemp(f"formats-{request.param}")
    source = make_video(scratch / "disc.mp4", seconds=4, disc=(160, 120, 60), audio=True)
    clips = list(
        iter_clips(
            source, probe_source(source, LIMITS), _spec(request.param), workdir=scratch, ffmpeg_timeout=300
        )
    )
    return {clip.format: clip for clip in clips}, request.param


def test_one_run_per_part_gives_a_clip_in_each_format(made):
    clips, _ = made
    assert sorted(clips) == sorted(SIZES)
    assert {clip.part.index for clip in clips.values()} == {1}
    assert clips["16:9"].path.name == "part-01.mp4" and clips["9:16"].path.name == "part-01-9x16.mp4"
    assert (
        clips["1:1"].preview_path is not None and clips["1:1"].preview_path.name == "part-01-1x1-preview.mp4"
    )


@pytest.mark.parametrize("clip_format", list(SIZES))
def test_each_format_has_its_frame_square_pixels_30_fps_and_one_audio_stream(made, clip_format):
    clip = made[0][clip_format]
    probe = ffprobe(clip.path)
    videos = [s for s in probe["streams"] if s["codec_type"] == "video"]
    audios = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(videos) == 1 and len(audios) == 1
    video = videos[0]
    assert (video["width"], video["height"]) == SIZES[clip_format]
    assert video["sample_aspect_ratio"] == "1:1"
    assert video["display_aspect_ratio"] == clip_format
    assert video["r_frame_rate"] == "30/1" and video["avg_frame_rate"] == "30/1"
    assert (audios[0]["codec_name"], audios[0]["channels"], audios[0]["sample_rate"]) == ("aac", 2, "48000")
    assert abs(float(probe["format"]["duration"]) - 6.0) <= FRAME
    assert abs(clip.duration_seconds - 6.0) <= FRAME


def _logo_card(width: int, height: int, scratch: Path) -> bytes:
    """The logo as a card of ``width`` x ``height`` shows it: fitted inside, on black."""
    card = scratch / f"card-{width}x{height}.png"
    ffmpeg(
        "-i",
        str(DEFAULT_LOGO),
        "-vf",
        f"scale={width}:{height}:force_original_aspect_ratio=decrease,pad={width}:{height}:(ow-iw)/2:(oh-ih)/2",
        "-frames:v",
        "1",
        str(card),
    )
    return frame_pixels(card, 0, width // 10, height // 10)


@pytest.mark.parametrize("clip_format", list(SIZES))
def test_each_format_opens_and_closes_on_the_logo_card_fitted_to_its_frame(made, clip_format, tmp_path):
    clip = made[0][clip_format]
    width, height = SIZES[clip_format]
    card = _logo_card(width, height, tmp_path)
    for at in (0.1, 0.9, 5.1, 5.9):
        assert mean_abs_diff(frame_pixels(clip.path, at, width // 10, height // 10), card) < 6, at
    assert mean_abs_diff(frame_pixels(clip.path, 3.0, width // 10, height // 10), card) > 30


@pytest.mark.parametrize("clip_format", list(SIZES))
def test_a_circle_stays_round_in_every_format_and_fit(made, clip_format):
    clips, fit = made
    width, height = SIZES[clip_format]
    # Read at half size (area scaling keeps the disc's shape) so the search stays quick.
    frame = frame_pixels(clips[clip_format].path, 3.0, width // 2, height // 2)
    disc = bright_blob(frame, width // 2)
    diameter = DISC_DIAMETERS[clip_format, fit] / 2
    assert abs(disc.width - disc.height) <= 3, disc
    assert abs(disc.width - diameter) <= 4, disc
    assert disc.center == pytest.approx((width / 4, height / 4), abs=3)
    corner = frame[2 * (width // 2) + 2]
    if fit == "pad":
        assert corner < 40  # a bar
    else:
        assert corner > 100  # the grey background fills the frame


@pytest.mark.parametrize("clip_format", list(SIZES))
def test_each_format_has_its_poster(made, clip_format):
    clip = made[0][clip_format]
    assert clip.poster_path.read_bytes()[:3] == b"\xff\xd8\xff"
    poster = ffprobe(clip.poster_path)["streams"][0]
    assert (poster["width"], poster["height"]) == SIZES[clip_format]


@pytest.mark.parametrize("clip_format", list(SIZES))
def test_each_clip_has_a_short_silent_small_preview_of_its_part(made, clip_format):
    clip = made[0][clip_format]
    assert clip.preview_path is not None
    probe = ffprobe(clip.preview_path)
    assert [s["codec_type"] for s in probe["streams"]] == ["video"]
    video = probe["streams"][0]
    width, height = SIZES[clip_format]
    assert max(video["width"], video["height"]) == 480
    assert video["width"] / video["height"] == pytest.approx(width / height, rel=0.01)
    assert (video["codec_name"], video["pix_fmt"], video["r_frame_rate"]) == ("h264", "yuv420p", "30/1")
    assert abs(float(probe["format"]["duration"]) - PREVIEW_SECONDS) <= FRAME
    assert clip.preview_path.stat().st_size <= PREVIEW_MAX_BYTES
    # It shows the part (the disc), not a card.
    frame = frame_pixels(clip.preview_path, 1.0, video["width"], video["height"])
    assert bright_blob(frame, video["width"]).pixels > 100


def test_a_preview_of_noisy_footage_stays_under_its_size_cap(tmp_path):
    # Grain on a moving pattern: the hardest picture to compress, the preview's worst case.
    source = make_video(
        tmp_path / "noisy.mp4", seconds=4, audio=False, extra=("-vf", "noise=alls=80:allf=t+u")
    )
    info = probe_source(source, LIMITS)
    (clip,) = iter_clips(source, info, ClipSpec(preset="ultrafast"), workdir=tmp_path, ffmpeg_timeout=300)
    assert clip.preview_path is not None and clip.preview_path.name == "part-01-preview.mp4"
    size = clip.preview_path.stat().st_size
    assert size <= PREVIEW_MAX_BYTES
    # The cap is what held it: the clip at its CRF spends far more on the same seconds.
    assert clip.size_bytes / 6 * PREVIEW_SECONDS > 2 * size


def test_one_thread_per_run_makes_the_same_clips_as_ffmpeg_s_own_threads(made, tmp_path):
    """``FFMPEG_THREADS=1``: every decoder, filter graph and encoder of the run on one
    thread. Every format comes out with its frame, length and picture."""
    clips, fit = made
    source = make_video(tmp_path / "disc.mp4", seconds=4, disc=(160, 120, 60), audio=True)
    limits = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320, threads=1)
    one_thread = {
        clip.format: clip
        for clip in iter_clips(
            source, probe_source(source, limits), _spec(fit), workdir=tmp_path, ffmpeg_timeout=300
        )
    }
    assert sorted(one_thread) == sorted(SIZES)
    for clip_format, clip in one_thread.items():
        video = next(s for s in ffprobe(clip.path)["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == SIZES[clip_format]
        assert abs(clip.duration_seconds - clips[clip_format].duration_seconds) <= FRAME
        assert mean_abs_diff(frame_pixels(clip.path, 3.0), frame_pixels(clips[clip_format].path, 3.0)) < 2
