"""Decompression bombs made of PNG frames in Matroska, for the transcoder's integration
tests and the security tests (``tests/`` is on the import path through its conftest).

Each picture is one bit deep and all black, so a 16000x16000 frame compresses to a few
tens of kilobytes yet decodes to 256 million pixels. The frames are muxed by stream copy:
building a file never decodes one."""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path


def black_png(side: int) -> bytes:
    """A ``side`` x ``side`` black PNG, one bit a pixel."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((side + 7) // 8)  # filter byte, then 1-bit pixels
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


def png_frames_mkv(path: Path, sides: list[int]) -> Path:
    """A Matroska file of one black PNG frame a second, frame ``i`` ``sides[i]`` square.
    The track header takes the first frame's size."""
    folder = path.parent / f"{path.stem}-frames"
    folder.mkdir()
    for index, side in enumerate(sides):
        (folder / f"{index:04d}.png").write_bytes(black_png(side))
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-framerate", "1"]
        + ["-i", str(folder / "%04d.png"), "-c", "copy", str(path)],
        check=True,
        timeout=120,
    )
    for frame in folder.iterdir():
        frame.unlink()
    folder.rmdir()
    return path


def resolution_bomb_mkv(path: Path, *, frames: int = 10, side: int = 16000) -> Path:
    """A stream whose first frame (and so its header and its probe) is 16x16 and whose
    later ``frames - 1`` frames are ``side`` x ``side``."""
    return png_frames_mkv(path, [16] + [side] * (frames - 1))
