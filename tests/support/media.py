"""Sources made with ffmpeg's test generators, and ways to look inside a downloaded clip."""

from __future__ import annotations

import json
import struct
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from infra.local.fileserver import ServedFolder, serve_folder
from services.transcoder.probe import SourceInfo

# Frames are compared scaled down to this size, one byte a pixel (grey).
COMPARE_WIDTH, COMPARE_HEIGHT = 128, 72
# A frame of the logo card differs from the card asset by a few levels (scaling and
# H.264 at CRF 23); a frame of the test pattern differs by far more.
CARD_MAX_DIFF = 6.0
NOT_CARD_MIN_DIFF = 30.0


def ffmpeg(*args: str, timeout: float = 300) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=timeout
    )


# The encoder of the tests' generated sources: quick, and readable by every player.
FAST_H264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")


def make_source(path: Path, *, seconds: float, width: int = 320, height: int = 240, **encoding) -> Path:
    """An H.264/AAC mp4 of a moving test pattern with a tone (``encoding``: the other
    parameters of :func:`make_video`)."""
    return make_video(path, seconds=seconds, width=width, height=height, extra=("-shortest",), **encoding)


def make_level_source(
    path: Path, container: str = "mp4", *, seconds: float, fps: int = 30, gop: int = 70, levels: int = 50
) -> Path:
    """A source whose frame N is flat grey at level 16 + 4 x (N mod ``levels``), with a
    tone: H.264 with B-frames and a keyframe every ``gop`` frames, so a part can start
    between two. Read its frames back with :func:`grey_levels`. In MPEG-TS the timeline
    starts at 1.4 s."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s=64x36:r={fps}:d={seconds},geq=lum='16+mod(N\\,{levels})*4':cb=128:cr=128",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate=48000:duration={seconds}",
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-bf",
        "3",
        "-g",
        str(gop),
        "-x264-params",
        "scenecut=0",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-f",
        container,
        str(path),
    )
    return path


def grey_levels(video: Path) -> list[int]:
    """Each frame's grey level, read at the centre of the picture."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(video),
            "-vf",
            "crop=8:8,scale=1:1,format=gray",
            "-f",
            "rawvideo",
            "-",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return list(raw)


def source_info(**changes: Any) -> SourceInfo:
    """What a probe says of a 45 s 1920x1080 30 fps H.264 source with sound, with
    ``changes`` (for the pure command builders' tests; no file behind it)."""
    base: dict[str, Any] = dict(
        container="mov,mp4",
        size_bytes=1,
        duration=45.0,
        width=1920,
        height=1080,
        display_width=1920,
        display_height=1080,
        rotation=0,
        frame_rate=30.0,
        video_stream=0,
        has_audio=True,
        video_codec="h264",
    )
    return SourceInfo(**(base | changes))


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


def frame_pixels(
    path: Path, at: float, width: int = COMPARE_WIDTH, height: int = COMPARE_HEIGHT, *, pix_fmt: str = "gray"
) -> bytes:
    """The frame shown at ``at`` seconds (a still image: its only frame), scaled to
    ``width`` x ``height``, as raw ``pix_fmt`` pixels (``gray``: one byte a pixel;
    ``rgb24``: three)."""
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
            f"scale={width}:{height}:flags=area",
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout


def as_clip_colour(image: Path, out: Path) -> Path:
    """``image`` converted as the clip's cards are (BT.709 matrix, limited range, 4:2:0),
    stored losslessly: what the card shows before H.264, for :func:`frame_pixels`."""
    ffmpeg(
        "-i",
        str(image),
        "-vf",
        "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
        "-c:v",
        "rawvideo",
        "-f",
        "nut",
        str(out),
    )
    return out


def mean_abs_diff(a: bytes, b: bytes) -> float:
    assert len(a) == len(b) and a
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


# Grey background, white disc: bars (black) and the disc are easy to tell apart.
_DISC = "geq=lum='if(lt(hypot(X-{cx}\\,Y-{cy})\\,{r})\\,235\\,128)':cb=128:cr=128"


def make_video(
    path: Path,
    *,
    width: int = 320,
    height: int = 240,
    seconds: float = 3,
    fps: int = 30,
    audio: bool = True,
    disc: tuple[int, int, int] | None = None,
    extra: tuple[str, ...] = (),
    preset: str = "ultrafast",
    keyframe_every: int | None = None,
    sample_rate: int = 44100,
    timeout: float = 300,
) -> Path:
    """An H.264/AAC mp4: a moving test pattern, or a still white disc (cx, cy, r) on grey.

    A keyframe every ``keyframe_every`` frames (by default every second); the tone is
    mono at ``sample_rate``. The benchmarks pass their own encoding (``preset``...)."""
    if disc is None:
        video = f"testsrc2=s={width}x{height}:r={fps}:d={seconds}"
    else:
        cx, cy, r = disc
        video = f"color=c=gray:s={width}x{height}:r={fps}:d={seconds},format=yuv420p," + _DISC.format(
            cx=cx, cy=cy, r=r
        )
    args = ["-f", "lavfi", "-i", video]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate={sample_rate}:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p", "-g", str(keyframe_every or fps)]
    if audio:
        args += ["-c:a", "aac", "-ac", "1"]
    ffmpeg(*args, *extra, str(path), timeout=timeout)
    return path


# Shots that tell apart on a grey picture (each cut scores 25 and more in ``scdet``),
# each moving within itself, used in turn.
_SHOT_LOOKS = ("testsrc2", "testsrc2,negate", "testsrc2,vflip,hue=h=120", "testsrc", "testsrc2,negate,vflip")


def make_shots(
    path: Path, shots: Sequence[float], *, width: int = 320, height: int = 180, fps: int = 30
) -> Path:
    """An H.264 mp4 without audio of consecutive shots of ``shots`` seconds each, with a
    hard cut between each two (at 7 and 16 s for ``(7, 9, 13)``)."""
    graph = []
    for index, seconds in enumerate(shots):
        generator, *looks = _SHOT_LOOKS[index % len(_SHOT_LOOKS)].split(",")
        chain = ",".join([f"{generator}=s={width}x{height}:r={fps}:d={seconds}", *looks])
        graph.append(f"{chain}[shot{index}]")
    inputs = "".join(f"[shot{index}]" for index in range(len(shots)))
    graph.append(f"{inputs}concat=n={len(shots)}:v=1:a=0[video]")
    ffmpeg(
        "-filter_complex",
        ";".join(graph),
        "-map",
        "[video]",
        *FAST_H264,
        "-g",
        str(fps),
        str(path),
    )
    return path


def make_rotated_portrait(path: Path, scratch: Path, *, seconds: float = 2) -> Path:
    """A phone-style portrait video stored landscape (320x180) with a 90° rotation tag.
    Shown upright it is 180x320 with a white disc in its upper part."""
    portrait = make_video(
        scratch / "portrait.mp4", width=180, height=320, seconds=seconds, disc=(90, 80, 40), audio=True
    )
    landscape = scratch / "landscape.mp4"
    ffmpeg(
        "-i",
        str(portrait),
        "-vf",
        "transpose=clock",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "copy",
        str(landscape),
    )
    ffmpeg("-i", str(landscape), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(path))
    return path


def ffprobe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
    ).stdout
    return json.loads(out)


@dataclass(frozen=True)
class Blob:
    left: int
    right: int
    top: int
    bottom: int
    pixels: int

    @property
    def width(self) -> int:
        return self.right - self.left + 1

    @property
    def height(self) -> int:
        return self.bottom - self.top + 1

    @property
    def center(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2


def bright_blob(frame: bytes, width: int, threshold: int = 200) -> Blob:
    """The bounding box of the pixels brighter than ``threshold``."""
    xs, ys = [], []
    for i, value in enumerate(frame):
        if value > threshold:
            xs.append(i % width)
            ys.append(i // width)
    assert xs, "no bright pixels in the frame"
    return Blob(min(xs), max(xs), min(ys), max(ys), len(xs))


def top_level_boxes(path: Path) -> list[str]:
    """The MP4's top-level box types, in file order."""
    boxes = []
    with path.open("rb") as mp4:
        while header := mp4.read(8):
            size, kind = struct.unpack(">I4s", header)
            boxes.append(kind.decode("latin-1"))
            if size == 1:
                size = struct.unpack(">Q", mp4.read(8))[0] - 8
            elif size == 0:
                break
            mp4.seek(size - 8, 1)
    return boxes


def max_volume_db(path: Path, start: float, seconds: float) -> float:
    """The loudest sample between ``start`` and ``start + seconds``, in dBFS."""
    stderr = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-ss",
            f"{start:.3f}",
            "-t",
            f"{seconds:.3f}",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-af",
            "volumedetect",
            "-f",
            "null",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stderr
    for line in stderr.splitlines():
        if "max_volume:" in line:
            return float(line.split("max_volume:")[1].split("dB")[0])
    raise AssertionError("volumedetect printed no max_volume")


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
