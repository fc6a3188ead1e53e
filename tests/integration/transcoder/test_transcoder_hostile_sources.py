"""Sources that must fail at once with a clear reason, and never make ffmpeg read
anything but the file it was given; a picture that grows past the size limit after the
probe, through the real worker beside another task; and a legitimate 4K source, which
the decoder and memory limits leave alone."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import psutil
import pytest

from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import build_clip_command
from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips
from services.transcoder.plan import Part
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.runner import run_ffmpeg
from shared.config import get_settings
from shared.events import ClipSpec
from tests.support.bombs import resolution_bomb_mkv
from tests.support.canary import Canary
from tests.support.media import ffmpeg, ffprobe, make_video, source_info
from tests.support.worker import (
    insert_task,
    submit,
    upload_source,
    wait_for,
    wait_status,
    worker_process,
)

pytestmark = pytest.mark.security

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)


def _fake_info() -> SourceInfo:
    return source_info(
        container="mov",
        size_bytes=100,
        duration=2.0,
        width=320,
        height=240,
        display_width=320,
        display_height=240,
        has_audio=False,
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


def test_a_codec_off_the_decoder_allow_list_fails_at_the_probe(tmp_path):
    source = tmp_path / "old.avi"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=s=160x120:r=10:d=1", "-c:v", "cinepak", str(source))
    with pytest.raises(PermanentFailure, match="^the source's cinepak codec is not supported$"):
        probe_source(source, LIMITS)


def test_a_memory_limit_too_small_for_the_source_fails_the_run_with_the_reason(small_source, tmp_path):
    limits = SourceLimits(
        max_bytes=10**9, max_seconds=60, max_width=7680, max_height=4320, max_memory_bytes=2**30
    )
    info = probe_source(small_source, limits)  # ffprobe fits in 1 GiB
    starved = SourceLimits(
        max_bytes=10**9, max_seconds=60, max_width=7680, max_height=4320, max_memory_bytes=300 * 2**20
    )
    with pytest.raises(PermanentFailure) as failure:
        list(
            iter_clips(
                small_source,
                dataclasses.replace(info, decode=starved.decode),
                ClipSpec(),
                workdir=tmp_path,
                ffmpeg_timeout=120,
            )
        )
    assert failure.value.reason == "decoding the source needs more than the 300 MiB of memory a clip may use"


# --- a picture that grows after the probe, and a legitimate 4K source ------------------------


@pytest.fixture
def tsettings(settings):
    return settings.model_copy(
        update={
            "transcoder_lease_extension_seconds": 10,
            "retry_initial_seconds": 0.2,
            "transcoder_concurrency": 2,  # the bomb and its sibling at the same time
            # Bounds the run where the decoder has no pixel limit: a bomb then decodes
            # for many minutes (more than 10 on the 2-vCPU test machine).
            "ffmpeg_timeout_seconds": 120,
        }
    )


def test_a_picture_growing_past_the_limit_after_the_probe_fails_its_task_alone(
    tsettings, engine, notifier, small_source, tmp_path
):
    bomb = resolution_bomb_mkv(tmp_path / "bomb.mkv", frames=10)
    assert bomb.stat().st_size < 1_000_000
    (stream,) = ffprobe(bomb)["streams"]
    assert (stream["width"], stream["height"]) == (16, 16), "the probe must see only the small first frame"
    assert probe_source(bomb, LIMITS).width == 16  # so the size check passes it

    spec = ClipSpec(width=320, height=180)
    hostile = insert_task(engine, upload_source(tsettings, bomb), spec)
    sibling = insert_task(engine, upload_source(tsettings, small_source), spec)
    with worker_process(tsettings, tmp_path / "worker.log") as worker:
        submit(tsettings, hostile)
        submit(tsettings, sibling)
        failed = wait_status(engine, hostile.task_id, "processed", "failed", timeout=240)
        processed = wait_status(engine, sibling.task_id, "processed", "failed", timeout=240)
        assert worker.process.poll() is None, worker.log()  # the worker lives on
        wait_for(lambda: not worker.ffmpeg_children(), 30, "no ffmpeg left running")

    assert (failed["status"], failed["attempt"], failed["clips"]) == ("failed", 1, []), failed
    assert failed["failure_reason"] == ("the source holds a 16000x16000 picture, over the 7680x4320 limit")
    assert len(notifier.outcomes(hostile.task_id)) == 1  # failed once, not redelivered
    assert (processed["status"], len(processed["clips"])) == ("processed", 1), processed


def test_a_4k_source_makes_its_clip_under_the_default_decoder_and_memory_limits(tmp_path):
    source = make_video(tmp_path / "uhd.mp4", width=3840, height=2160, seconds=2)
    limits = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
    info = probe_source(source, limits)
    configured = get_settings().ffmpeg_memory_limit_bytes
    assert configured > 0 and info.decode.memory_bytes == configured

    seen: set[int] = set()
    done = threading.Event()

    def watch_address_space_limits() -> None:
        while not done.is_set():
            for child in psutil.Process().children(recursive=True):
                try:
                    if child.name() == "ffmpeg":
                        seen.add(child.rlimit(psutil.RLIMIT_AS)[0])
                except psutil.NoSuchProcess:
                    pass
            done.wait(0.02)

    watcher = threading.Thread(target=watch_address_space_limits, daemon=True)
    watcher.start()
    try:
        (clip,) = list(iter_clips(source, info, ClipSpec(), workdir=tmp_path, ffmpeg_timeout=600))
    finally:
        done.set()
        watcher.join()
    assert clip.duration_seconds == pytest.approx(4.0, abs=0.1)
    assert seen == {configured}, "the clip's ffmpeg ran under the configured address-space limit"
