"""Turning ffprobe's JSON into a source description, and the limits (no ffmpeg run)."""

import pytest

from services.transcoder.errors import PermanentFailure
from services.transcoder.probe import SourceLimits, describe_source

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=600, max_width=3840, max_height=2160)


def probe(*streams, duration="12.5", format_name="mov,mp4,m4a,3gp,3g2,mj2"):
    return {"streams": list(streams), "format": {"duration": duration, "format_name": format_name}}


def video(index=0, width=1920, height=1080, **extra):
    return {
        "index": index,
        "codec_type": "video",
        "codec_name": "h264",
        "width": width,
        "height": height,
        "avg_frame_rate": "30/1",
        "duration": "12.5",
        **extra,
    }


AUDIO = {"index": 1, "codec_type": "audio", "codec_name": "aac"}


def test_a_plain_landscape_source():
    info = describe_source(probe(video(), AUDIO), 1000, LIMITS)
    assert (info.display_width, info.display_height, info.rotation) == (1920, 1080, 0)
    assert info.has_audio and info.duration == 12.5 and info.video_stream == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": -90}]},
        {"side_data_list": [{"side_data_type": "Display Matrix", "rotation": 90}]},
        {"tags": {"rotate": "270"}},
    ],
)
def test_rotation_swaps_the_display_size(extra):
    info = describe_source(probe(video(**extra)), 1000, LIMITS)
    assert info.rotation in (90, 270)
    assert (info.display_width, info.display_height) == (1080, 1920)


def test_non_square_pixels_are_widened_to_the_display_size():
    info = describe_source(probe(video(width=720, height=576, sample_aspect_ratio="16:11")), 1, LIMITS)
    assert (info.display_width, info.display_height) == (1047, 576)


def test_cover_art_is_not_a_video_stream():
    cover = video(disposition={"attached_pic": 1})
    with pytest.raises(PermanentFailure, match="no video stream"):
        describe_source(probe(AUDIO, cover), 1000, LIMITS)


def test_audio_only_has_no_video_stream():
    with pytest.raises(PermanentFailure, match="no video stream"):
        describe_source(probe(AUDIO), 1000, LIMITS)


def test_the_shorter_of_container_and_video_is_the_duration():
    info = describe_source(probe(video(duration="40.0"), AUDIO, duration="45.2"), 1, LIMITS)
    assert info.duration == 40.0


@pytest.mark.parametrize("duration", ["N/A", None, "0", "-3"])
def test_an_unknown_duration_fails(duration):
    source = video()
    source.pop("duration")
    with pytest.raises(PermanentFailure, match="duration"):
        describe_source(probe(source, duration=duration), 1, LIMITS)


def test_over_the_duration_limit():
    with pytest.raises(PermanentFailure, match="over the 600 s limit"):
        describe_source(probe(video(duration="601"), duration="601"), 1, LIMITS)


@pytest.mark.parametrize("size", [(3841, 2160), (3840, 2161), (2161, 3840)])
def test_over_the_resolution_limit(size):
    with pytest.raises(PermanentFailure, match="over the 3840x2160 limit"):
        describe_source(probe(video(width=size[0], height=size[1])), 1, LIMITS)


def test_portrait_within_the_limit_turned_sideways_passes():
    info = describe_source(probe(video(width=2160, height=3840)), 1, LIMITS)
    assert info.display_height == 3840


def test_audio_counts_only_when_its_first_stream_can_be_decoded():
    unknown = {"index": 1, "codec_type": "audio"}  # ffprobe names no codec
    assert not describe_source(probe(video(), unknown, AUDIO), 1, LIMITS).has_audio
    assert describe_source(probe(video(), AUDIO, unknown), 1, LIMITS).has_audio


def test_the_decoder_limits_come_from_the_source_limits():
    limits = SourceLimits(
        max_bytes=10**9, max_seconds=600, max_width=3840, max_height=2160, max_memory_bytes=2**30
    )
    info = describe_source(probe(video(), AUDIO), 1000, limits)
    # A portrait 2160x3840 source has the same count: the limit is on pixels, not sides.
    assert (info.decode.max_pixels, info.decode.memory_bytes) == (3840 * 2160, 2**30)


def test_the_memory_limit_defaults_to_the_setting(monkeypatch):
    from shared.config import Settings

    monkeypatch.setattr(
        "services.transcoder.probe.get_settings", lambda: Settings(ffmpeg_memory_limit_bytes=12345678)
    )
    assert SourceLimits(max_bytes=1, max_seconds=1, max_width=1, max_height=1).max_memory_bytes == 12345678
