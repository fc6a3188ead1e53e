"""HDR and RGB sources, and unnamed audio channels, through the real pipeline (real ffmpeg).

HDR: one colour pattern, written once as SDR BT.709 and once each as HLG and PQ BT.2020
(10-bit, its white at BT.2408's 203 cd/m², where a phone puts diffuse white). Tone-mapped,
the HDR clips must look like the SDR clip; read as BT.709 (the chain before tone
mapping) they are far from it.

Audio: a different tone in each channel of a source with no channel layout; the clip's
left and right must carry the first two channels' tones and nothing of the others.
"""

from __future__ import annotations

import dataclasses
import math
import struct
import subprocess
from pathlib import Path

import pytest

from services.transcoder.pipeline import iter_clips
from services.transcoder.probe import SourceInfo, SourceLimits, probe_source
from shared.events import ClipSpec
from tests.support.media import ffmpeg, ffprobe, frame_pixels

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
SECONDS = 1
# testsrc2 drawn in RGB, read as full-range BT.709 RGB by zscale.
PATTERN = f"testsrc2=s=320x240:r=30:d={SECONDS},format=gbrp"
FROM_RGB = "tin=bt709:pin=bt709:min=gbr:rin=pc"
# Where in the clip the pattern is compared: half a second into the part.
AT = ClipSpec().card_seconds + 0.5


def make_clip(source: Path, workdir: Path, spec: ClipSpec = ClipSpec(), *, info: SourceInfo | None = None):
    workdir.mkdir()
    info = info or probe_source(source, LIMITS)
    (clip,) = iter_clips(source, info, spec, workdir=workdir, ffmpeg_timeout=300)
    return clip


def _write_pattern(path: Path, zscale: str, pix_fmt: str, *tags: str) -> Path:
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        PATTERN,
        "-vf",
        f"zscale={FROM_RGB}:{zscale},format={pix_fmt}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "12",
        *tags,
        str(path),
    )
    return path


def sdr_source(path: Path) -> Path:
    return _write_pattern(
        path,
        "t=bt709:p=bt709:m=bt709:r=tv",
        "yuv420p",
        "-color_primaries",
        "bt709",
        "-color_trc",
        "bt709",
        "-colorspace",
        "bt709",
    )


def hdr_source(path: Path, transfer: str) -> Path:
    # npl=203: the pattern's white (linear 1.0) is written at 203 cd/m² (HLG 75 %, PQ 58 %).
    return _write_pattern(
        path,
        f"t={transfer}:p=bt2020:m=bt2020nc:r=tv:npl=203",
        "yuv420p10le",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        transfer,
        "-colorspace",
        "bt2020nc",
    )


def distance(a: bytes, b: bytes) -> float:
    """Mean absolute difference per RGB sample (0..255)."""
    assert len(a) == len(b) == 128 * 72 * 3
    return sum(abs(x - y) for x, y in zip(a, b)) / len(a)


def video_stream(path: Path) -> dict:
    (video,) = [s for s in ffprobe(path)["streams"] if s["codec_type"] == "video"]
    return video


@pytest.fixture(scope="module")
def sdr_clip(tmp_path_factory):
    scratch = tmp_path_factory.mktemp("sdr")
    return make_clip(sdr_source(scratch / "sdr.mp4"), scratch / "clips")


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084"], ids=["hlg", "pq"])
def test_an_hdr_source_is_tone_mapped_to_sdr_bt709(tmp_path, sdr_clip, transfer):
    source = hdr_source(tmp_path / "hdr.mp4", transfer)
    tags = video_stream(source)
    assert (tags["color_transfer"], tags["color_primaries"], tags["pix_fmt"]) == (
        transfer,
        "bt2020",
        "yuv420p10le",
    )
    info = probe_source(source, LIMITS)
    assert (info.color_transfer, info.color_primaries, info.color_space) == (transfer, "bt2020", "bt2020nc")

    clip = make_clip(source, tmp_path / "clips", info=info)
    video = video_stream(clip.path)
    assert (video["width"], video["height"], video["pix_fmt"]) == (1280, 720, "yuv420p")
    assert (
        video["color_primaries"],
        video["color_transfer"],
        video["color_space"],
        video["color_range"],
    ) == ("bt709", "bt709", "bt709", "tv")

    # The same pattern made from the HDR source by the SDR chain (no tone mapping): how
    # the clip looked before HDR was recognised.
    untreated = dataclasses.replace(
        info, color_transfer="", color_primaries="", color_space="", color_range=""
    )
    old = make_clip(source, tmp_path / "old", info=untreated)

    reference = frame_pixels(sdr_clip.path, AT, pix_fmt="rgb24")
    mapped, washed = (
        distance(frame_pixels(clip.path, AT, pix_fmt="rgb24"), reference),
        distance(frame_pixels(old.path, AT, pix_fmt="rgb24"), reference),
    )
    # Measured (ffmpeg 5.1, libx264): tone-mapped about 10 (the pattern's white, at
    # 203 cd/m², lands at 92 %, not 100 %), untreated 50 (HLG) and 65 (PQ): greyed
    # colours, a wrong brightness. Posters: 8 against 46 and 61.
    assert mapped < 15, (mapped, washed)
    assert washed > 3 * mapped, (mapped, washed)

    # The poster branches off the tone-mapped body.
    poster_reference = frame_pixels(sdr_clip.poster_path, 0, pix_fmt="rgb24")
    poster = distance(frame_pixels(clip.poster_path, 0, pix_fmt="rgb24"), poster_reference)
    old_poster = distance(frame_pixels(old.poster_path, 0, pix_fmt="rgb24"), poster_reference)
    assert poster < 15, (poster, old_poster)
    assert old_poster > 3 * poster, (poster, old_poster)


def test_an_sdr_clip_is_tagged_bt709_limited_range(sdr_clip):
    video = video_stream(sdr_clip.path)
    assert (
        video["pix_fmt"],
        video["color_primaries"],
        video["color_transfer"],
        video["color_space"],
        video["color_range"],
    ) == ("yuv420p", "bt709", "bt709", "bt709", "tv")


def test_a_full_range_source_comes_out_limited_range(tmp_path):
    # Black on the left, white on the right, coded full range: 0 and 255.
    source = tmp_path / "full.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s=320x240:r=30:d={SECONDS},"
        "drawbox=x=160:y=0:w=160:h=240:color=white:t=fill,format=gbrp",
        "-vf",
        f"zscale={FROM_RGB}:t=bt709:p=bt709:m=bt709:r=pc,format=yuvj420p",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "12",
        "-color_range",
        "pc",
        str(source),
    )
    assert video_stream(source)["color_range"] == "pc"
    clip = make_clip(source, tmp_path / "clips")
    assert video_stream(clip.path)["color_range"] == "tv"
    # Left as they are, the samples would stay 0 and 255: under the clip's limited-range
    # tag, detail near black and white would be crushed.
    row = y_plane(clip.path, AT)[360 * 1280 : 361 * 1280]  # pad: the picture is x 160..1119
    black, white = sorted(row[200:600])[200], sorted(row[700:1100])[200]
    assert (black, white) == (pytest.approx(16, abs=2), pytest.approx(235, abs=2))


@pytest.mark.parametrize(
    "codec, pix_fmt, name",
    [
        ("qtrle", "rgb24", "animation.mov"),  # QuickTime Animation: screen recordings
        ("png", "rgba", "png.mov"),
        ("ffv1", "bgr0", "lossless.mkv"),
        ("png", "pal8", "palette.mov"),
    ],
)
def test_an_rgb_source_comes_out_in_its_own_colours(tmp_path, codec, pix_fmt, name):
    # zimg will not turn RGB into luma and chroma without being told the matrix; before
    # it was, every RGB source failed ("YUV color family cannot have RGB matrix").
    colour = (31, 166, 217)
    source = tmp_path / name
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=c=0x{bytes(colour).hex()}:s=320x240:r=30:d={SECONDS}",
        "-c:v",
        codec,
        "-pix_fmt",
        pix_fmt,
        str(source),
    )
    assert video_stream(source)["pix_fmt"] == pix_fmt

    shown = frame_pixels(source, 0.5, pix_fmt="rgb24")[:3]  # what a player shows (a palette is not exact)
    assert list(shown) == [pytest.approx(c, abs=8) for c in colour]

    clip = make_clip(source, tmp_path / "clips")
    centre = frame_pixels(clip.path, AT, pix_fmt="rgb24")[(36 * 128 + 64) * 3 :][:3]
    assert list(centre) == [pytest.approx(c, abs=4) for c in shown]
    video = video_stream(clip.path)
    assert (video["pix_fmt"], video["color_space"], video["color_range"]) == ("yuv420p", "bt709", "tv")


def y_plane(path: Path, at: float) -> bytes:
    """The luma samples of the frame shown at ``at`` seconds, as coded (1280x720)."""
    frame = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-ss",
            f"{at:.3f}",
            "-i",
            str(path),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "yuv420p",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert len(frame) == 1280 * 720 * 3 // 2
    return frame[: 1280 * 720]


# --- audio without a channel layout ------------------------------------------------------

TONES = [300 + 200 * n for n in range(32)]  # Hz: channel n plays TONES[n]
AUDIO_SPEC = ClipSpec(width=320, height=180, preset="ultrafast")


def unnamed_channels_source(path: Path, channels: int) -> Path:
    """A Matroska file whose PCM audio has ``channels`` channels and no layout,
    channel n a sine of TONES[n] Hz at -18 dBFS."""
    exprs = "|".join(f"0.125*sin(2*PI*{TONES[n]}*t)" for n in range(channels))
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=s=160x90:r=30:d={SECONDS}",
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc=exprs={exprs}:s=48000:d={SECONDS}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-c:a",
        "pcm_s16le",
        str(path),
    )
    return path


def tone_levels(path: Path, start: float, seconds: float) -> list[dict[int, float]]:
    """Per output channel (left, right), the amplitude of each of the first four tones."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-ss",
            f"{start:.3f}",
            "-t",
            f"{seconds:.3f}",
            "-i",
            str(path),
            "-map",
            "0:a",
            "-f",
            "f32le",
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    samples = struct.unpack(f"<{len(raw) // 4}f", raw)
    levels = []
    for channel in (samples[0::2], samples[1::2]):
        row = {}
        for tone in TONES[:4]:
            step = 2 * math.pi * tone / 48000
            re = sum(v * math.cos(step * i) for i, v in enumerate(channel))
            im = sum(v * math.sin(step * i) for i, v in enumerate(channel))
            row[tone] = 2 * math.hypot(re, im) / len(channel)
        levels.append(row)
    return levels


def only_audio_stream(path: Path) -> dict:
    (audio,) = [s for s in ffprobe(path)["streams"] if s["codec_type"] == "audio"]
    return audio


@pytest.mark.parametrize("channels", [32, 12])
def test_unnamed_channels_keep_the_first_two_as_left_and_right(tmp_path, channels):
    source = unnamed_channels_source(tmp_path / "many.mkv", channels)
    probed = only_audio_stream(source)
    assert probed["channels"] == channels and "channel_layout" not in probed
    info = probe_source(source, LIMITS)
    assert (info.audio_channels, info.audio_layout) == (channels, "")

    clip = make_clip(source, tmp_path / "clips", AUDIO_SPEC)
    audio = only_audio_stream(clip.path)
    assert (audio["codec_name"], audio["channels"], audio["channel_layout"], audio["sample_rate"]) == (
        "aac",
        2,
        "stereo",
        "48000",
    )

    left, right = tone_levels(clip.path, AUDIO_SPEC.card_seconds + 0.2, 0.5)
    first, second, third, fourth = TONES[:4]
    # Channel 0 alone on the left, channel 1 alone on the right, at their own level
    # (0.125); a downmix would bring channel 2 into both.
    assert left[first] == pytest.approx(0.125, abs=0.01), left
    assert right[second] == pytest.approx(0.125, abs=0.01), right
    for level in (left[second], left[third], left[fourth], right[first], right[third], right[fourth]):
        assert level < 0.005, (left, right)


def test_six_unnamed_channels_are_downmixed_as_5_1_keeping_the_centre(tmp_path):
    source = unnamed_channels_source(tmp_path / "six.mkv", 6)
    assert "channel_layout" not in only_audio_stream(source)

    clip = make_clip(source, tmp_path / "clips", AUDIO_SPEC)
    audio = only_audio_stream(clip.path)
    assert (audio["channels"], audio["channel_layout"]) == (2, "stereo")
    left, right = tone_levels(clip.path, AUDIO_SPEC.card_seconds + 0.2, 0.5)
    first, second, centre, _ = TONES[:4]
    # Front left and right stay on their sides; the centre (the voice of a 5.1 mix) is
    # in both. Taking only the first two channels would drop it.
    assert left[first] > 0.02 and right[second] > 0.02, (left, right)
    assert left[second] < 0.005 and right[first] < 0.005, (left, right)
    assert left[centre] > 0.02 and right[centre] > 0.02, (left, right)


def test_one_unnamed_channel_plays_on_both_sides(tmp_path):
    source = unnamed_channels_source(tmp_path / "mono.mkv", 1)
    probed = only_audio_stream(source)
    assert probed["channels"] == 1 and probed.get("channel_layout", "unknown") == "unknown"

    clip = make_clip(source, tmp_path / "clips", AUDIO_SPEC)
    assert only_audio_stream(clip.path)["channels"] == 2
    left, right = tone_levels(clip.path, AUDIO_SPEC.card_seconds + 0.2, 0.5)
    # Like a tagged mono source: -3 dB on each side (0.125 / sqrt 2).
    assert left[TONES[0]] == pytest.approx(0.0884, abs=0.01), left
    assert right[TONES[0]] == pytest.approx(0.0884, abs=0.01), right
