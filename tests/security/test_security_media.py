"""Hostile media: polyglots, crafted HLS/ffconcat/subfile references, 50 audio streams,
a zero-duration video, variable frame rate with timestamp jumps. Each gives good clips
or fails with a clear reason: never a hang, never a read of another file.

The plain HLS and ffconcat references to /etc/passwd are covered by
tests/integration/transcoder/test_transcoder_hostile_sources.py; these add the `subfile`
protocol, a playlist that is also an MP4, and for each crafted file a control run of an
unhardened ffprobe that does follow the reference (so the file is a live attack)."""

from __future__ import annotations

import io
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest

from services.transcoder.errors import PermanentFailure
from services.transcoder.graph import build_clip_command
from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips
from services.transcoder.plan import Part
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from services.transcoder.runner import run_ffmpeg
from shared.config import Settings
from shared.events import ClipSpec
from tests.support.canary import Canary
from tests.support.media import ffmpeg, ffprobe, source_info
from tests.support.security import leaks_in, tiny_video, upload, wait_for_outcome

pytestmark = pytest.mark.security

DEFAULTS = Settings()
LIMITS = SourceLimits(
    DEFAULTS.max_source_bytes,
    DEFAULTS.max_source_seconds,
    DEFAULTS.max_source_width,
    DEFAULTS.max_source_height,
)
# Small clips keep the runs short; every other knob is the platform's default.
SPEC = ClipSpec(width=320, height=180)


@pytest.fixture(scope="module")
def one_second(tmp_path_factory) -> bytes:
    return tiny_video(tmp_path_factory.mktemp("media") / "one.mp4").read_bytes()


def make_clips(source: Path, workdir: Path) -> list:
    """What the worker does with a fetched source: probe under the limits, then one
    ffmpeg run per part. Raises PermanentFailure with the reason."""
    info = probe_source(source, LIMITS)
    return list(iter_clips(source, info, SPEC, workdir=workdir, ffmpeg_timeout=120))


def assert_good_clip(path: Path, expected_seconds: float) -> None:
    probe = ffprobe(path)
    videos = [s for s in probe["streams"] if s["codec_type"] == "video"]
    audios = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert len(videos) == 1 and len(audios) == 1, probe["streams"]
    video, audio = videos[0], audios[0]
    assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == (
        "h264",
        SPEC.width,
        SPEC.height,
        f"{SPEC.fps}/1",
    )
    assert (audio["codec_name"], int(audio["sample_rate"]), audio["channels"]) == ("aac", SPEC.audio_rate, 2)
    assert float(probe["format"]["duration"]) == pytest.approx(expected_seconds, abs=0.1)


# --- crafted references --------------------------------------------------------------------


def _hls_polyglot(canary: Path, mp4: bytes) -> bytes:
    # Text first (HLS wins the probe), an MP4 after it: named .mp4, it is a playlist.
    return (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nfile:{canary}\n#EXT-X-ENDLIST\n"
    ).encode() + mp4


def _hls_subfile(canary: Path, mp4: bytes) -> bytes:
    return (
        f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\nsubfile,,start,0,end,1000,,:{canary}\n"
        "#EXT-X-ENDLIST\n"
    ).encode()


def _ffconcat_subfile(canary: Path, mp4: bytes) -> bytes:
    return f"ffconcat version 1.0\nfile 'subfile,,start,0,end,1000,,:{canary}'\nfile '/etc/passwd'\n".encode()


CRAFTED = [
    # name, builder, the unhardened ffprobe arguments that do follow the reference
    ("playlist-polyglot.mp4", _hls_polyglot, []),
    ("subfile-playlist.mp4", _hls_subfile, None),  # ffmpeg's HLS itself refuses subfile
    (
        "subfile-list.mp4",
        _ffconcat_subfile,
        ["-safe", "0", "-protocol_whitelist", "file,subfile,crypto,data"],
    ),
]


def _unhardened_probe(source: Path, arguments: list[str]) -> None:
    subprocess.run(
        ["ffprobe", "-v", "quiet", *arguments, str(source)], capture_output=True, timeout=30, check=False
    )


def _fake_info() -> SourceInfo:
    return source_info(
        container="mov",
        size_bytes=100,
        duration=2.0,
        width=160,
        height=90,
        display_width=160,
        display_height=90,
        frame_rate=10.0,
    )


@pytest.mark.parametrize("name, build, control", CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_references_are_never_followed(tmp_path, one_second, name, build, control):
    # HLS loads only segments with a media extension: the canary looks like one.
    canary_path = tmp_path / "segment.ts"
    source = tmp_path / name
    source.write_bytes(build(canary_path, one_second))

    if control is not None:
        canary = Canary(canary_path)
        _unhardened_probe(source, control)
        assert canary.was_read(wait=5), (
            "the crafted file does not reach its target: the test would prove nothing"
        )
        canary_path.unlink()

    canary = Canary(canary_path)
    with pytest.raises(PermanentFailure, match="not a readable video") as probed:
        probe_source(source, LIMITS)
    # As if the probe had been fooled: the clip command's own allow-lists refuse it too.
    command = build_clip_command(
        source,
        _fake_info(),
        Part(1, 0.0, 1.0),
        SPEC,
        DEFAULT_LOGO,
        tmp_path / "part-01.mp4",
        tmp_path / "part-01.jpg",
    )
    with pytest.raises(PermanentFailure, match="could not be decoded") as encoded:
        run_ffmpeg(command.args, timeout=60)
    assert not canary.was_read()
    # The reasons reach the task's owner: ffmpeg's words, without its paths and addresses.
    assert leaks_in(probed.value.reason) == [] and leaks_in(encoded.value.reason) == []


def _free_box(payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + b"free" + payload


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_an_mp4_carrying_a_playlist_html_and_a_zip_gives_good_clips_and_reads_nothing_else(
    local_stack, gateway, athlete, tmp_path, one_second
):
    canary_path = tmp_path / "segment.ts"
    canary = Canary(canary_path)
    references = (
        f"\n#EXTM3U\n#EXTINF:10.0,\nfile:{canary_path}\n#EXT-X-ENDLIST\n"
        f"ffconcat version 1.0\nfile '{canary_path}'\nfile '/etc/passwd'\n"
    ).encode()
    html = b"<html><body><script>alert(document.cookie)</script></body></html>"
    archive = _zip({"run.html": html, "payload.m3u8": references})
    # A valid MP4 (ftyp first), then one trailing box holding the rest: the ZIP ends the
    # file, so it is a valid archive as well.
    content = one_second + _free_box(references + html + archive)
    assert zipfile.ZipFile(io.BytesIO(content)).namelist() == ["run.html", "payload.m3u8"]

    created = upload(gateway, athlete, "run.html", content)
    assert created.status_code == 202, created.text
    task = wait_for_outcome(gateway, athlete, created.json()["id"])

    assert task["status"] == "processed" and len(task["clips"]) == 1, task
    assert not canary.was_read()
    # The original comes back as what its bytes are, as a download, never as a page.
    original = gateway.get(task["links"]["original"], user=athlete)
    assert original.headers["Content-Type"] == "video/mp4"
    assert original.headers["Content-Disposition"] == f'attachment; filename="{task["id"]}-original.mp4"'
    assert original.headers["X-Content-Type-Options"] == "nosniff"
    assert original.content == content


def test_an_unreadable_upload_fails_with_a_reason_that_names_no_internals(local_stack, gateway, athlete):
    # An MP4's first bytes (the api takes it for a video), then noise: ffprobe's complaint
    # starts with its demuxer's memory address, which must not reach the owner.
    content = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + bytes(range(256)) * 64
    created = upload(gateway, athlete, "run.mp4", content)
    assert created.status_code == 202, created.text

    task = wait_for_outcome(gateway, athlete, created.json()["id"])  # every answer leak-scanned

    assert task["status"] == "failed"
    assert task["failure_reason"] == "the source is not a readable video (moov atom not found)"


# --- odd but legitimate media ----------------------------------------------------------------


def test_fifty_audio_streams_give_one_clip_with_exactly_one_audio_stream(tmp_path):
    source = tmp_path / "fifty.mkv"
    maps = [arg for _ in range(50) for arg in ("-map", "1:a")]
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=160x90:r=10:d=1",
        "-f",
        "lavfi",
        "-i",
        "sine=d=1",
        "-map",
        "0:v",
        *maps,
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "aac",
        str(source),
    )
    assert sum(s["codec_type"] == "audio" for s in ffprobe(source)["streams"]) == 50

    [clip] = make_clips(source, tmp_path)

    assert_good_clip(clip.path, clip.part.duration + 2 * SPEC.card_seconds)


def test_audio_with_32_channels_and_no_layout_makes_a_stereo_clip(tmp_path):
    # Nothing says how to fold 32 unnamed channels into stereo (ffmpeg has no guess past
    # 8): the first two become left and right, and the clip is made.
    source = tmp_path / "32-channels.mkv"
    labels = "".join(f"[a{n}]" for n in range(32))
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=160x90:r=10:d=1",
        "-f",
        "lavfi",
        "-i",
        "sine=d=1",
        "-filter_complex",
        f"[1:a]asplit=32{labels};{labels}amerge=inputs=32[all]",
        "-map",
        "0:v",
        "-map",
        "[all]",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_s16le",
        str(source),
    )

    [clip] = make_clips(source, tmp_path)
    assert_good_clip(clip.path, clip.part.duration + 2 * SPEC.card_seconds)


def _zero_durations(mp4: bytearray) -> bytearray:
    """The movie, track and media headers all declare a duration of 0 (version-0 boxes)."""
    for box, offset in ((b"mvhd", 16), (b"tkhd", 20), (b"mdhd", 16)):
        at = mp4.find(box)
        while at != -1:
            assert mp4[at + 4] == 0, "a version-1 header box"
            struct.pack_into(">I", mp4, at + 4 + offset, 0)
            at = mp4.find(box, at + 4)
    return mp4


def test_a_zero_duration_video_fails_with_the_reason(tmp_path):
    single = tiny_video(tmp_path / "single.mp4", audio=False, extra=("-frames:v", "1"))
    source = tmp_path / "zero.mp4"
    source.write_bytes(_zero_durations(bytearray(single.read_bytes())))
    probe = ffprobe(source)
    assert [s["codec_type"] for s in probe["streams"]] == ["video"] and float(
        probe["format"]["duration"]
    ) == 0

    with pytest.raises(PermanentFailure, match="duration cannot be determined"):
        make_clips(source, tmp_path)
    assert list(tmp_path.glob("part-*")) == []


def test_a_single_frame_video_gives_a_clip_of_the_cards_and_that_frame(tmp_path):
    source = tiny_video(tmp_path / "single.mp4", extra=("-frames:v", "1"))
    [clip] = make_clips(source, tmp_path)
    assert_good_clip(clip.path, clip.part.duration + 2 * SPEC.card_seconds)
    assert clip.part.duration == pytest.approx(0.1, abs=0.05)


def _jumping(path: Path, jump_frames: int) -> Path:
    """Ten frames a second for a second, then the timestamps jump ``jump_frames``/10 s
    ahead for another second (variable frame rate: timestamps kept as they are)."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc2=s=160x90:r=10:d=2",
        "-vf",
        f"setpts='if(lt(N,10),N,N+{jump_frames})/10/TB'",
        "-fps_mode",
        "passthrough",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        str(path),
    )
    return path


def test_a_timestamp_jump_inside_the_limits_gives_a_constant_rate_clip(tmp_path):
    source = _jumping(tmp_path / "jump.mkv", jump_frames=40)  # a 4 s hole
    [clip] = make_clips(source, tmp_path)
    assert clip.part.duration == pytest.approx(6, abs=0.1)
    assert_good_clip(clip.path, 6 + 2 * SPEC.card_seconds)


def test_a_timestamp_jump_past_the_duration_limit_fails_before_encoding(tmp_path):
    source = _jumping(tmp_path / "jump.mkv", jump_frames=36000)  # an hour's hole
    with pytest.raises(PermanentFailure, match="lasts 3602 s, over the 1800 s limit"):
        make_clips(source, tmp_path)
    assert list(tmp_path.glob("part-*")) == []
