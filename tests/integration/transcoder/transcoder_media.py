"""Test media made with ffmpeg's own sources, and ways to look inside the clips."""

from __future__ import annotations

import json
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Grey background, white disc: bars (black) and the disc are easy to tell apart.
_DISC = "geq=lum='if(lt(hypot(X-{cx}\\,Y-{cy})\\,{r})\\,235\\,128)':cb=128:cr=128"


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


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
) -> Path:
    """An H.264/AAC mp4: a moving test pattern, or a still white disc (cx, cy, r) on grey."""
    if disc is None:
        video = f"testsrc2=s={width}x{height}:r={fps}:d={seconds}"
    else:
        cx, cy, r = disc
        video = f"color=c=gray:s={width}x{height}:r={fps}:d={seconds},format=yuv420p," + _DISC.format(
            cx=cx, cy=cy, r=r
        )
    args = ["-f", "lavfi", "-i", video]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", str(fps)]
    if audio:
        args += ["-c:a", "aac", "-ac", "1"]
    ffmpeg(*args, *extra, str(path))
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


def gray_frame(path: Path, at: float, width: int, height: int) -> bytes:
    """The frame shown at ``at`` seconds, scaled to ``width`` x ``height``, one byte a pixel."""
    # A still image has no timeline to seek in: no -ss for it.
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
            "gray",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout


def mean_abs_diff(a: bytes, b: bytes) -> float:
    assert len(a) == len(b) and a
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


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
