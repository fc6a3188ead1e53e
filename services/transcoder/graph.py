"""The one ffmpeg command that makes a clip: logo card + part + logo card, and a poster.

Built with ffmpeg-python and returned as an argument list; nothing runs here. The graph::

    [logo] scale+pad to WxH, setsar=1, yuv420p, loop 1 frame -> card frames --split--> card A, card B
    [source part] (ffmpeg autorotates on decode) fps=30, zscale to the fit, pad|crop to WxH,
                  setsar=1, yuv420p --split--> clip body, poster branch
                  (an HLG or PQ source: zscale to the fit in linear light, tone-mapped
                  to SDR BT.709, before the pad|crop)
    [source audio | silence] aformat 48 kHz stereo fltp
                  (more than 8 unnamed channels: the first two kept, by channelmap, before aformat)
                  (loudness asked for: the source's audio then through loudnorm, with the
                  part's measurement from .loudness, and aformat again back to 48 kHz)
    [silence] --asplit--> card A audio, card B audio (each trimmed to the card length)
    concat(card A, body, card B; v=1 a=1) -> H.264 + AAC, +faststart   -> part-NN.mp4
    poster branch: trim to a frame inside the part, full-range 4:2:0    -> part-NN.jpg

The source is read under the allow-lists and the decoder's picture-size limit of
:mod:`.hardening` (``info.decode``). The part is cut by input seeking (``-ss``/``-t`` before ``-i``), so only that part is
decoded. ``fps`` runs before ``scale`` so a 60 fps source is thinned before the costly
step, and the source is scaled exactly once, straight to the fitted size, by zimg.
The clip is tagged limited-range BT.709: an HDR source is tone-mapped to it, a
full-range one brought to its range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.transcoder.hardening import LOGO_INPUT_OPTIONS, local_url, source_input_options
from services.transcoder.plan import Part, fit_geometry
from services.transcoder.probe import SourceInfo, is_rgb
from shared.events import ClipSpec

AUDIO_BITRATE = "128k"
# ffmpeg names a layout for unnamed audio of up to this many channels (7.1).
GUESSED_LAYOUT_MAX_CHANNELS = 8
POSTER_QUALITY = 3  # mjpeg -q:v; 2 (best) .. 31

# Transfers of high dynamic range video, as ffprobe names them: PQ (HDR10, Dolby Vision)
# and HLG (phones record this by default).
HDR_TRANSFERS = frozenset({"smpte2084", "arib-std-b67"})
# The colour description of every clip (and what x264 writes into it).
CLIP_COLOR = dict(color_primaries="bt709", color_trc="bt709", colorspace="bt709", color_range="tv")
# What zscale may be told about an HDR source; anything else is read as BT.2020,
# the one gamut HLG and PQ are defined with.
_HDR_PRIMARIES = frozenset({"bt2020", "bt709", "smpte431", "smpte432"})
_HDR_MATRICES = frozenset({"bt2020nc", "bt2020c", "bt709"})


@dataclass(frozen=True)
class ClipCommand:
    args: list[str]
    clip_path: Path
    poster_path: Path
    expected_seconds: float  # cards + part: what the clip should last


def build_clip_command(
    source: Path,
    info: SourceInfo,
    part: Part,
    spec: ClipSpec,
    logo: Path,
    clip_path: Path,
    poster_path: Path,
    loudnorm: Mapping[str, str] | None = None,
) -> ClipCommand:
    """The ffmpeg arguments that turn ``part`` of ``source`` into one clip and its poster.

    ``loudnorm``: the options of a ``loudnorm`` filter on the source's audio
    (:func:`.loudness.loudnorm_arguments`); the cards' silence never passes through it."""
    width, height, fps = spec.width, spec.height, spec.fps
    card = spec.card_seconds
    card_frames = max(1, round(card * fps))
    card = card_frames / fps  # a card is a whole number of frames
    fit = fit_geometry(info.display_width, info.display_height, width, height, spec.fit)

    src = ffmpeg.input(
        local_url(source),
        ss=f"{part.start:.6f}",
        t=f"{part.duration:.6f}",
        **source_input_options(info.decode),
    )
    logo_in = ffmpeg.input(local_url(logo), f="image2", **LOGO_INPUT_OPTIONS)
    silence_seconds = 2 * card + (0 if info.has_audio else part.duration)
    silence = ffmpeg.input(
        f"anullsrc=r={spec.audio_rate}:cl=stereo",
        f="lavfi",
        t=f"{silence_seconds + 1:.3f}",
        format_whitelist="lavfi",
    )

    cards = (
        logo_in.video.filter(
            "scale",
            width,
            height,
            force_original_aspect_ratio="decrease",
            out_color_matrix="bt709",
            out_range="tv",
        )
        .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("setsar", 1)
        .filter("format", "yuv420p")
        .filter("loop", loop=card_frames - 1, size=1, start=0)
        .filter("setpts", f"N/({fps}*TB)")
        .filter_multi_output("split", 2)
    )

    # zimg (zscale) resamples with a kernel widened to the shrink factor, so a 4K source
    # does not alias, and costs less CPU than swscale's area or bicubic (see
    # docs/benchmarks.md). For SDR only the size changes, and a full range is brought to
    # the clip's limited one: no colour conversion is asked for.
    body = src[str(info.video_stream)].filter("fps", fps)
    if info.color_transfer in HDR_TRANSFERS:
        body = _tone_mapped(body, info, fit.scale_width, fit.scale_height)
    else:
        body = body.filter(
            "zscale", w=fit.scale_width, h=fit.scale_height, filter="bicubic", **_sdr_conversion(info)
        )
    if fit.mode == "pad":
        body = body.filter("pad", width, height, fit.x, fit.y, color="black")
    else:
        body = body.filter("crop", width, height, fit.x, fit.y)
    body = (
        body.filter("setsar", 1)
        .filter("format", "yuv420p")
        .filter("setpts", "PTS-STARTPTS")
        .filter_multi_output("split", 2)
    )

    silences = silence.audio.filter_multi_output("asplit", 3 if not info.has_audio else 2)

    def silent(stream, seconds: float):
        return _audio_format(stream.filter("atrim", duration=f"{seconds:.6f}"), spec).filter(
            "asetpts", "PTS-STARTPTS"
        )

    if info.has_audio:
        body_audio = content_audio(src["a:0"], info, spec)
        if loudnorm is not None:
            # loudnorm works (and hands its output on) at 192 kHz.
            body_audio = _audio_format(body_audio.filter("loudnorm", **loudnorm), spec)
        body_audio = body_audio.filter("asetpts", "PTS-STARTPTS")
    else:
        body_audio = silent(silences[2], part.duration)

    joined = ffmpeg.concat(
        cards[0],
        silent(silences[0], card),
        body[0],
        body_audio,
        cards[1],
        silent(silences[1], card),
        v=1,
        a=1,
    ).node
    clip = ffmpeg.output(
        joined[0],
        joined[1],
        str(clip_path),
        vcodec=spec.video_codec,
        preset=spec.preset,
        crf=spec.crf,
        pix_fmt="yuv420p",
        r=fps,
        fps_mode="cfr",
        acodec="aac",
        ar=spec.audio_rate,
        ac=2,
        audio_bitrate=AUDIO_BITRATE,
        movflags="+faststart",
        map_metadata=-1,
        map_chapters=-1,
        f="mp4",
        **CLIP_COLOR,
    )

    # A second into the part (or its middle), clear of a fade-in; a part of a frame or
    # two has only its first frame to offer.
    poster_at = min(1.0, part.duration / 2) if part.duration >= 2 / fps else 0.0
    poster = ffmpeg.output(
        body[1].filter("trim", start=f"{poster_at:.3f}").filter("format", "yuvj420p"),
        str(poster_path),
        vframes=1,
        q=POSTER_QUALITY,
        map_metadata=-1,
        f="image2",
        update=1,
    )
    command = (
        ffmpeg.merge_outputs(clip, poster)
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-progress", "pipe:1")
        .overwrite_output()
    )
    return ClipCommand(
        args=command.compile(cmd="ffmpeg"),
        clip_path=clip_path,
        poster_path=poster_path,
        expected_seconds=part.duration + 2 * card,
    )


def _tone_mapped(stream, info: SourceInfo, width: int, height: int):
    """An HLG or PQ picture scaled to ``width`` x ``height`` and tone-mapped to SDR
    BT.709, limited range, yuv420p."""
    primaries = info.color_primaries if info.color_primaries in _HDR_PRIMARIES else "bt2020"
    matrix = info.color_space if info.color_space in _HDR_MATRICES else "bt2020nc"
    return (
        # Scaled first, so the float steps run at the clip's size, not the source's.
        # The input is named from the probe, not left to the frames' own tags, so an
        # HDR stream missing some of them is still read as HDR. npl=100: linear 1.0 is
        # 100 cd/m², the reference white tonemap reads the mastering display and content
        # light metadata against (and without them it takes a 1000 cd/m² peak); BT.2408's
        # diffuse white (203 cd/m², HLG 75 %) comes out at about 92 %. The gamut is
        # brought to BT.709 in linear light, in float, so nothing clips before tonemap.
        stream.filter(
            "zscale",
            w=width,
            h=height,
            filter="bicubic",
            transferin=info.color_transfer,
            primariesin=primaries,
            matrixin=matrix,
            rangein="pc" if info.color_range == "pc" else "tv",
            t="linear",
            npl=100,
            p="bt709",
        )
        .filter("format", "gbrpf32le")
        # mobius keeps the in-range part (below 0.3, i.e. 30 cd/m²) linear and rolls the
        # rest smoothly into the peak: midtones and colours stay as the SDR render of
        # the scene has them, where hable darkens them (docs/transcoder.md). desat=0:
        # bright colours keep their saturation instead of fading to white.
        .filter("tonemap", "mobius", desat=0)
        .filter("zscale", t="bt709", m="bt709", r="tv")
        .filter("format", "yuv420p")
    )


def _sdr_conversion(info: SourceInfo) -> dict[str, str]:
    """What zscale must convert besides the size for an SDR source: a full range to the
    clip's limited one, and RGB samples (screen recordings, PNG or QuickTime Animation)
    to BT.709 luma and chroma, which zimg will not guess (its RGB matrix cannot describe
    YUV). A limited-range YUV source: nothing."""
    if is_rgb(info.pixel_format):
        return {"m": "bt709", "r": "tv"}
    return {"r": "tv"} if info.color_range == "pc" else {}


def content_audio(
    stream: ffmpeg.nodes.FilterableStream, info: SourceInfo, spec: ClipSpec
) -> ffmpeg.nodes.FilterableStream:
    """The source's audio ``stream`` as the clip carries it: stereo, ``spec.audio_rate``,
    float (what the loudness measurement reads too)."""
    return _audio_format(_named_channels(stream, info), spec)


def _named_channels(stream, info: SourceInfo):
    """The source's audio with channels ``aformat`` can fold into stereo.

    Without a layout ffmpeg guesses one from the channel count up to
    ``GUESSED_LAYOUT_MAX_CHANNELS`` (mono, stereo, ..., 5.1 for 6, 7.1 for 8) and
    downmixes it as such, keeping a surround track's centre (the voice). Past that it has
    no guess: 32 unnamed channels cannot be downmixed at all ("Rematrix is needed between
    32 channels and stereo"), and are more likely separate microphones than a mix, so
    the first two are kept as left and right (in every standard order the front pair).
    """
    if info.audio_layout or info.audio_channels <= GUESSED_LAYOUT_MAX_CHANNELS:
        return stream
    return stream.filter("channelmap", map="0|1", channel_layout="stereo")


def _audio_format(stream, spec: ClipSpec):
    return stream.filter(
        "aformat", sample_fmts="fltp", sample_rates=spec.audio_rate, channel_layouts="stereo"
    )
