"""Sources that must fail at once with a clear reason, and never make ffmpeg read
anything but the file it was given."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import build_clip_command
from services.transcoder.pipeline import DEFAULT_LOGO
from services.transcoder.plan import Part
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.runner import run_ffmpeg
from shared.events import ClipSpec
from tests.support.canary import Canary
from tests.support.media import ffmpeg, make_video

pytestmark = pytest.mark.security

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)


def _fake_info() -> SourceInfo:
    return SourceInfo(
        container="mov",
        size_bytes=100,
        duration=2.0,
        width=320,
        height=240,
        display_width=320,
        display_height=240,
        rotation=0,
        frame_rate=30.0,
        video_stream=0,
        has_audio=False,
        video_codec="h264",
    )


def _run_pipeline_command(source: Path, scratch: Path) -> None:
    """Skip the probe and hand the file straight to the clip command, as if a probe
    had been fooled: the command's own allow-lists must still refuse it."""
    command = build_clip_command(
        source,
        _fake_info(),
        Part(1, 0.0, 2.0),
        ClipSpec(width=320, height=180),
        DEFAULT_LOGO,
        scratch / "part-01.mp4",
        scratch / "part-01.jpg",
    )
    run_ffmpeg(command.args, timeout=60)


@pytest.mark.parametrize(
    "name, content",
    [
        (
            "playlist.mp4",
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n"
            "#EXTINF:10.0,\n{canary}\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
        ),
        (
            "playlist.m3u8",
            "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:{canary}\n#EXT-X-ENDLIST\n",
        ),
        ("list.mp4", "ffconcat version 1.0\nfile '{canary}'\nfile '/etc/passwd'\n"),
        ("list.ffconcat", "ffconcat version 1.0\nfile 'file:{canary}'\n"),
    ],
)
def test_playlists_and_concat_scripts_are_never_followed(tmp_path, name, content):
    canary = Canary(tmp_path / "canary")
    source = tmp_path / name
    source.write_text(content.format(canary=canary.path))
    with pytest.raises(PermanentFailure, match="not a readable video"):
        probe_source(source, LIMITS)
    with pytest.raises(PermanentFailure, match="could not be decoded"):
        _run_pipeline_command(source, tmp_path)
    assert not canary.was_read()
    assert not (tmp_path / "part-01.mp4").exists()


def test_the_canary_detects_a_reader(tmp_path):
    canary = Canary(tmp_path / "canary")
    with open(canary.path, "rb") as reader:
        reader.read()
    assert canary.was_read()


def test_a_text_file_named_mp4(tmp_path):
    source = tmp_path / "video.mp4"
    source.write_text("this is not a video\n" * 100)
    with pytest.raises(PermanentFailure, match="not a readable video"):
        probe_source(source, LIMITS)


def test_a_zero_byte_file(tmp_path):
    source = tmp_path / "empty.mp4"
    source.touch()
    with pytest.raises(PermanentFailure, match="empty"):
        probe_source(source, LIMITS)


def test_a_truncated_mp4(tmp_path):
    whole = make_video(tmp_path / "whole.mp4", seconds=2)
    source = tmp_path / "truncated.mp4"
    source.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # moov is at the end
    with pytest.raises(PermanentFailure, match="not a readable video"):
        probe_source(source, LIMITS)


def test_a_faststart_mp4_cut_short_is_caught_after_encoding(tmp_path):
    from services.transcoder.pipeline import iter_clips

    whole = make_video(
        tmp_path / "whole.mp4", width=160, height=120, seconds=4, extra=("-movflags", "+faststart")
    )
    source = tmp_path / "cut.mp4"
    source.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 5])
    info = probe_source(source, LIMITS)  # the header still promises 4 s
    assert info.duration == pytest.approx(4, abs=0.1)
    with pytest.raises(PermanentFailure, match="damaged"):
        list(iter_clips(source, info, ClipSpec(width=320, height=180), workdir=tmp_path, ffmpeg_timeout=60))


def test_audio_only_file_has_no_video(tmp_path):
    source = tmp_path / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(source))
    with pytest.raises(PermanentFailure, match="no video stream"):
        probe_source(source, LIMITS)


@pytest.fixture(scope="module")
def small_source(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("limits") / "source.mp4", seconds=2)


@pytest.mark.parametrize(
    "limits, reason",
    [
        (
            SourceLimits(max_bytes=1000, max_seconds=60, max_width=7680, max_height=4320),
            "over the 1000 bytes limit",
        ),
        (
            SourceLimits(max_bytes=10**9, max_seconds=1, max_width=7680, max_height=4320),
            "lasts 2 s, over the 1 s limit",
        ),
        (
            SourceLimits(max_bytes=10**9, max_seconds=60, max_width=160, max_height=120),
            "320x240, over the 160x120 limit",
        ),
    ],
)
def test_a_source_over_each_limit(small_source, limits, reason):
    with pytest.raises(PermanentFailure, match=reason):
        probe_source(small_source, limits)
    probe_source(small_source, LIMITS)  # within the limits it passes
