"""What ffmpeg and ffprobe may read.

A media file can name other files: an HLS playlist lists segment URLs, an ffconcat
script lists paths, a QuickTime reference movie points at external data. Reading the
source through the ``file`` protocol only, with a demuxer allow-list of real video
containers, means none of those indirections is ever parsed, so a hostile source cannot
make ffmpeg read ``/etc/passwd`` or reach the network. The list is by demuxer name;
ffmpeg checks it after probing the content, so a playlist renamed ``.mp4`` is still
refused.
"""

from __future__ import annotations

from pathlib import Path

VIDEO_CONTAINERS = (
    "mov",  # also matches mp4, m4a, 3gp, 3g2, mj2: one demuxer
    "mp4",
    "matroska",  # and webm
    "webm",
    "avi",
    "flv",
    "mpegts",
    "mpeg",
    "asf",
    "ogg",
    "mxf",
    "dv",
    "ivf",
)

SOURCE_INPUT_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(VIDEO_CONTAINERS),
}

# The logo card is the platform's own PNG; still opened under the same protocol rule.
LOGO_INPUT_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": "image2,png_pipe,jpeg_pipe",
}


def local_url(path: Path) -> str:
    """``path`` as an explicit ``file:`` URL, so no part of a name reads as a protocol."""
    return "file:" + str(Path(path).resolve())
