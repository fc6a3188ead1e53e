"""What ffmpeg and ffprobe may read, and with which decoders.

A media file can name other files: an HLS playlist lists segment URLs, an ffconcat
script lists paths, a QuickTime reference movie points at external data. Reading the
source through the ``file`` protocol only, with a demuxer allow-list of real video
containers, means none of those indirections is ever parsed, so a hostile source cannot
make ffmpeg read ``/etc/passwd`` or reach the network. The list is by demuxer name;
ffmpeg checks it after probing the content, so a playlist renamed ``.mp4`` is still
refused.

The decoders come from an allow-list too: the codecs cameras, phones, screen recorders
and editors write, not the hundreds of game and legacy formats ffmpeg also knows (each
one more parser a hostile file could reach). Subtitle decoders are on it because ffprobe
opens a decoder for every stream it lists; the clip command never maps a subtitle. And
the decoder refuses a picture larger than the configured source size
(:class:`DecodeLimits`), whatever the container's header said: a stream whose first
frame is 16x16 passes the probe, its later 16000x16000 frames stop at the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
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

# By decoder name (``ffmpeg -decoders``), which is what ffmpeg matches, not the codec's.
VIDEO_DECODERS = (
    "h264",
    "hevc",
    "vp8",
    "vp9",
    "libdav1d",  # AV1: the decoder ffmpeg picks first; the other two where it is absent
    "libaom-av1",
    "av1",
    "mpeg4",
    "msmpeg4",
    "mpeg1video",
    "mpeg2video",
    "h263",
    "flv",
    "theora",
    "vc1",
    "wmv3",
    "mjpeg",  # also MJPEG cameras, and the cover art an MP4 may carry
    "png",
    "prores",
    "dnxhd",
    "cfhd",  # GoPro CineForm
    "dvvideo",
    "qtrle",  # QuickTime Animation: screen recordings
    "ffv1",
    "rawvideo",
)
AUDIO_DECODERS = (
    "aac",
    "aac_fixed",
    "aac_latm",
    "mp3float",
    "mp3",
    "mp2float",
    "mp2",
    "ac3",
    "ac3_fixed",
    "eac3",
    "opus",
    "libopus",
    "vorbis",
    "libvorbis",
    "flac",
    "alac",
    "amrnb",
    "amrwb",
    "wmav2",
    "wmapro",
    "pcm_s16le",
    "pcm_s16be",
    "pcm_s24le",
    "pcm_s24be",
    "pcm_s32le",
    "pcm_f32le",
    "pcm_u8",
    "pcm_alaw",
    "pcm_mulaw",
    "pcm_dvd",
    "pcm_bluray",
    "adpcm_ima_qt",
    "adpcm_ms",
)
SUBTITLE_DECODERS = ("mov_text", "subrip", "ass", "ssa", "webvtt", "dvdsub", "dvbsub", "pgssub")
SOURCE_DECODERS = VIDEO_DECODERS + AUDIO_DECODERS + SUBTITLE_DECODERS

SOURCE_INPUT_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": ",".join(VIDEO_CONTAINERS),
    "codec_whitelist": ",".join(SOURCE_DECODERS),
}

# The logo card is the platform's own PNG; still opened under the same rules.
LOGO_INPUT_OPTIONS = {
    "protocol_whitelist": "file",
    "format_whitelist": "image2,png_pipe,jpeg_pipe",
    "codec_whitelist": "png,mjpeg",
}


@dataclass(frozen=True)
class DecodeLimits:
    """How much an ffmpeg or ffprobe run on a source may decode and use; 0: no limit."""

    max_width: int = 0  # with max_height, the largest picture the decoder accepts
    max_height: int = 0
    memory_bytes: int = 0  # the process's address space (RLIMIT_AS)
    threads: int = 0  # each decoder's, filter graph's and encoder's threads (0: ffmpeg's choice)

    @property
    def max_pixels(self) -> int:
        """The decoder's ``-max_pixels``: a count, so a portrait source fits as well."""
        return self.max_width * self.max_height


def source_input_options(limits: DecodeLimits) -> dict[str, str]:
    """The input options of a source for ffmpeg and ffprobe: the allow-lists, and the
    decoder's picture-size limit."""
    options = dict(SOURCE_INPUT_OPTIONS)
    if limits.max_pixels > 0:
        options["max_pixels"] = str(limits.max_pixels)
    return options


def thread_options(limits: DecodeLimits) -> dict[str, str]:
    """The ``-threads`` of an ffmpeg input or output under ``limits``: none when ffmpeg
    chooses (about one thread per core for each decoder and encoder)."""
    return {"threads": str(limits.threads)} if limits.threads > 0 else {}


def thread_global_args(limits: DecodeLimits) -> list[str]:
    """ffmpeg's global options that hold its filter graphs to ``limits.threads``."""
    if limits.threads <= 0:
        return []
    return ["-filter_threads", str(limits.threads), "-filter_complex_threads", str(limits.threads)]


def local_url(path: Path) -> str:
    """``path`` as an explicit ``file:`` URL, so no part of a name reads as a protocol."""
    return "file:" + str(Path(path).resolve())
