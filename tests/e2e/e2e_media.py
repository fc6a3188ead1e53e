"""Sources made with ffmpeg's test generators, and ways to look inside a downloaded clip."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.local.fileserver import ServedFolder, serve_folder

# Frames are compared scaled down to this size, one byte a pixel (grey).
COMPARE_WIDTH, COMPARE_HEIGHT = 128, 72
# A frame of the logo card differs from the card asset by a few levels (scaling and
# H.264 at CRF 23); a frame of the test pattern differs by far more.
CARD_MAX_DIFF = 6.0
NOT_CARD_MIN_DIFF = 30.0


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=300
    )


def make_source(path: Path, *, seconds: float, width: int = 320, height: int = 240, fps: int = 30) -> Path:
    """An H.264/AAC mp4 of a moving test pattern with a tone."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=s={width}x{height}:r={fps}:d={seconds}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=44100:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        "-g",
        str(fps),
        "-c:a",
        "aac",
        "-ac",
        "1",
        "-shortest",
        str(path),
    )
    return path


@dataclass(frozen=True)
class ClipFacts:
    """What ffprobe says about a clip."""

    duration: float
    video_streams: int
    audio_streams: int
    width: int
    height: int


def probe_clip(path: Path) -> ClipFacts:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    probe = json.loads(out)
    videos = [s for s in probe["streams"] if s["codec_type"] == "video"]
    audios = [s for s in probe["streams"] if s["codec_type"] == "audio"]
    assert videos, f"{path.name} has no video stream"
    return ClipFacts(
        duration=float(probe["format"]["duration"]),
        video_streams=len(videos),
        audio_streams=len(audios),
        width=int(videos[0]["width"]),
        height=int(videos[0]["height"]),
    )


def gray_frame(path: Path, at: float) -> bytes:
    """The frame shown at ``at`` seconds (a still image: its only frame), scaled down."""
    seek = ["-ss", f"{at:.3f}"] if at > 0 else []
    return subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            *seek,
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-vf",
            f"scale={COMPARE_WIDTH}:{COMPARE_HEIGHT}:flags=area",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def mean_abs_diff(a: bytes, b: bytes) -> float:
    assert len(a) == len(b) == COMPARE_WIDTH * COMPARE_HEIGHT
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


# --- fixtures: the e2e tests and the fault drills import these into their conftest -------


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def source_server(media_dir: Path) -> Iterator[ServedFolder]:
    """The media folder over HTTP on loopback (the stacks allow loopback sources)."""
    with serve_folder(media_dir) as served:
        yield served


@pytest.fixture(scope="session")
def short_source(media_dir: Path) -> Path:
    """3 s, 320x240, with sound: one part, a 5 s clip."""
    return make_source(media_dir / "short.mp4", seconds=3)


@pytest.fixture(scope="session")
def two_part_source(media_dir: Path) -> Path:
    """23 s, 320x240, with sound: parts of 20 and 3 s, clips of 22 and 5 s."""
    return make_source(media_dir / "two-parts.mp4", seconds=23)


@pytest.fixture(scope="session")
def long_clip_source(media_dir: Path) -> Path:
    """12 s, 320x240: one clip long enough to be caught while ffmpeg makes it."""
    return make_source(media_dir / "twelve-seconds.mp4", seconds=12)
