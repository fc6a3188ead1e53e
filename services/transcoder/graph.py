"""The one ffmpeg command that makes a part's clips: in each format of the spec, card +
part + card, a poster and a preview.

Built with ffmpeg-python and returned as an argument list; nothing runs here. The graph::

    [source part] (ffmpeg autorotates on decode) fps=30 --split--> one body per format
    per format (:func:`_format_outputs`):
      [card image] scale+pad to WxH, setsar=1, yuv420p, loop 1 frame -> card frames --split--> card A, card B
      body: zscale to the fit, pad|crop to WxH, setsar=1, yuv420p --split--> clip body, poster, preview
                  (an HLG or PQ source: zscale to the fit in linear light, tone-mapped
                  to SDR BT.709, before the pad|crop)
      concat(card A, body, card B; v=1 a=1) -> H.264 + AAC, +faststart   -> part-NN.mp4
      poster branch: trim to a frame inside the part, full-range 4:2:0    -> part-NN.jpg
      preview branch: 3 s from the poster's frame, 480 px, capped rate   -> part-NN-preview.mp4
    [source audio | silence] aformat 48 kHz stereo --asplit--> one per format
                  (more than 8 unnamed channels: the first two kept, by channelmap, before aformat)
                  (loudness asked for: the source's audio then through loudnorm, with the
                  part's measurement from .loudness, and aformat again back to 48 kHz)
    [silence] --asplit--> each format's card A and card B audio (trimmed to the card length)

With one format (no ``spec.formats``) there is no split of the decoded part nor of its
audio, and without a preview path no preview branch: the command of a clip as it was
before formats existed.

The source is read under the allow-lists and the decoder's picture-size limit of
:mod:`.hardening` (``info.decode``). The part is cut by input seeking (``-ss``/``-t`` before ``-i``), so only that part is
decoded. ``fps`` runs before ``scale`` so a 60 fps source is thinned before the costly
step, and the source is scaled exactly once, straight to the fitted size, by zimg.
The clip is tagged limited-range BT.709: an HDR source is tone-mapped to it, a
full-range one brought to its range.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ffmpeg

from services.transcoder.hardening import (
    LOGO_INPUT_OPTIONS,
    local_url,
    source_input_options,
    thread_global_args,
    thread_options,
)
from services.transcoder.plan import Frame, Part, clip_frames, fit_geometry
from services.transcoder.probe import SourceInfo, is_rgb
from shared.events import ClipSpec

AUDIO_BITRATE = "128k"
# ffmpeg names a layout for unnamed audio of up to this many channels (7.1).
GUESSED_LAYOUT_MAX_CHANNELS = 8
POSTER_QUALITY = 3  # mjpeg -q:v; 2 (best) .. 31
# The animated preview beside each poster: a few seconds, small, silent. Its bitrate is
# capped (maxrate and a buffer of one second) so that even a noisy picture stays under
# PREVIEW_MAX_BYTES: at most 3 s x 700 kbit/s + a 700 kbit buffer = 350 kB.
PREVIEW_SECONDS = 3.0
PREVIEW_LONG_SIDE = 480
PREVIEW_CRF = 28
PREVIEW_MAXRATE = "700k"
PREVIEW_MAX_BYTES = 400_000

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
class FormatFiles:
    """Where one format's outputs of a part are written: the clip, its poster and, when
    asked for, its preview."""

    clip: Path
    poster: Path
    preview: Path | None = None


@dataclass(frozen=True)
class ClipCommand:
    args: list[str]
    clip_path: Path  # the first format's clip (the only one without ``spec.formats``)
    poster_path: Path
    expected_seconds: float  # cards + part: what every clip should last
    files: dict[str, FormatFiles] = field(default_factory=dict)  # format -> its outputs


def build_clip_command(
    source: Path,
    info: SourceInfo,
    part: Part,
    spec: ClipSpec,
    logo: Path,
    clip_path: Path,
    poster_path: Path,
    *,
    preview_path: Path | None = None,
    loudnorm: Mapping[str, str] | None = None,
) -> ClipCommand:
    """The ffmpeg arguments that turn ``part`` of ``source`` into one clip and its poster
    (and a preview at ``preview_path``): the spec's first frame, with ``logo`` as its card
    (``loudnorm`` as in :func:`build_part_command`)."""
    frame = clip_frames(spec)[0]
    return build_part_command(
        source,
        info,
        part,
        spec,
        {frame.format: FormatFiles(clip_path, poster_path, preview_path)},
        cards={frame.format: logo},
        loudnorm=loudnorm,
    )


def build_part_command(
    source: Path,
    info: SourceInfo,
    part: Part,
    spec: ClipSpec,
    files: Mapping[str, FormatFiles],
    *,
    cards: Mapping[str, Path],
    loudnorm: Mapping[str, str] | None = None,
    seek_to: float | None = None,
) -> ClipCommand:
    """The one ffmpeg run that makes every format of ``spec`` (:func:`.plan.clip_frames`)
    from ``part`` of ``source``: one decode, then a branch per format writing its clip,
    poster and preview to ``files[format]``, with ``cards[format]`` as its card image (the
    logo, or a card made for that frame).

    ``loudnorm``: the options of a ``loudnorm`` filter on the source's audio
    (:func:`.loudness.loudnorm_arguments`); the cards' silence never passes through it.

    ``seek_to``: ``source`` is the part's segment (:mod:`.segments`), which keeps the
    source's timestamps, and the part starts at that time on them."""
    frames = [frame for frame in clip_frames(spec) if frame.format in files]
    if len(frames) != len(files) or any(frame.format not in cards for frame in frames):
        raise ValueError("every format of the spec needs its files and its card, and only those")
    fps = spec.fps
    card_frames = max(1, round(spec.card_seconds * fps))
    card = card_frames / fps  # a card is a whole number of frames

    src = ffmpeg.input(
        local_url(source),
        **part_span(part, seek_to),
        **source_input_options(info.decode),
        **thread_options(info.decode),
    )
    card_inputs = [
        ffmpeg.input(local_url(cards[frame.format]), f="image2", **LOGO_INPUT_OPTIONS) for frame in frames
    ]
    count = len(frames)
    silence_seconds = 2 * card + (0 if info.has_audio else part.duration)
    silence = ffmpeg.input(
        f"anullsrc=r={spec.audio_rate}:cl=stereo",
        f="lavfi",
        t=f"{silence_seconds + 1:.3f}",
        format_whitelist="lavfi",
    )

    # The part is decoded once and thinned to the clip's rate once; each format scales
    # that to its own frame.
    decoded = src[str(info.video_stream)].filter("fps", fps)
    bodies = [decoded] if count == 1 else _split(decoded, "split", count)

    silences = silence.audio.filter_multi_output("asplit", (2 if info.has_audio else 3) * count)

    def silent(stream, seconds: float):
        return _audio_format(stream.filter("atrim", duration=f"{seconds:.6f}"), spec).filter(
            "asetpts", "PTS-STARTPTS"
        )

    # The content's audio is one chain, split once per format.
    if info.has_audio:
        content = content_audio(src["a:0"], info, spec)
        if loudnorm is not None:
            # loudnorm works (and hands its output on) at 192 kHz.
            content = _audio_format(content.filter("loudnorm", **loudnorm), spec)
        content = content.filter("asetpts", "PTS-STARTPTS")
        contents = [content] if count == 1 else _split(content, "asplit", count)
    else:
        contents = [silent(silences[2 * count + i], part.duration) for i in range(count)]

    outputs = []
    for i, frame in enumerate(frames):
        outputs += _format_outputs(
            FormatBranch(
                frame=frame,
                body=bodies[i],
                card=card_inputs[i],
                content_audio=contents[i],
                card_audio=(silent(silences[2 * i], card), silent(silences[2 * i + 1], card)),
            ),
            info,
            part,
            spec,
            card_frames,
            files[frame.format],
        )
    command = (
        ffmpeg.merge_outputs(*outputs)
        .global_args(
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            *thread_global_args(info.decode),
        )
        .overwrite_output()
    )
    first = files[frames[0].format]
    return ClipCommand(
        args=command.compile(cmd="ffmpeg"),
        clip_path=first.clip,
        poster_path=first.poster,
        expected_seconds=part.duration + 2 * card,
        files={frame.format: files[frame.format] for frame in frames},
    )


def part_span(part: Part, seek_to: float | None = None) -> dict[str, Any]:
    """The input options that read only ``part``: from its start (on the source, or at
    ``seek_to`` on the timeline of its segment), for its duration."""
    start = {"ss": f"{part.start:.6f}"} if seek_to is None else {"ss": f"{seek_to:.6f}", "seek_timestamp": 1}
    return {**start, "t": f"{part.duration:.6f}"}


@dataclass(frozen=True)
class FormatBranch:
    """What one format's branch starts from: the decoded part at the clip's rate, its card
    image input, the content's audio and the two cards' silences."""

    frame: Frame
    body: Any
    card: Any
    content_audio: Any
    card_audio: tuple[Any, Any]


def _format_outputs(
    branch: FormatBranch, info: SourceInfo, part: Part, spec: ClipSpec, card_frames: int, files: FormatFiles
) -> list[Any]:
    """One format's outputs: the clip (card + part + card), its poster and its preview."""
    width, height, fps = branch.frame.width, branch.frame.height, spec.fps
    fit = fit_geometry(info.display_width, info.display_height, width, height, branch.frame.fit)

    # Scaled to fit inside the frame and centred on black: a card image is never stretched.
    cards = (
        branch.card.video.filter(
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
    body = branch.body
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
        .filter_multi_output("split", 2 if files.preview is None else 3)
    )

    joined = ffmpeg.concat(
        cards[0],
        branch.card_audio[0],
        body[0],
        branch.content_audio,
        cards[1],
        branch.card_audio[1],
        v=1,
        a=1,
    ).node
    clip = ffmpeg.output(
        joined[0],
        joined[1],
        str(files.clip),
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
        **thread_options(info.decode),
    )

    # A second into the part (or its middle), clear of a fade-in; a part of a frame or
    # two has only its first frame to offer.
    poster_at = min(1.0, part.duration / 2) if part.duration >= 2 / fps else 0.0
    # The poster's branch ends after its one frame (a frame's duration from its start):
    # otherwise every later frame of the part would still be converted to full range
    # and thrown away, about a tenth of the run's CPU (docs/benchmarks.md).
    poster = ffmpeg.output(
        body[1]
        .filter("trim", start=f"{poster_at:.3f}", duration=f"{1 / fps:.6f}")
        .filter("format", "yuvj420p"),
        str(files.poster),
        vframes=1,
        q=POSTER_QUALITY,
        map_metadata=-1,
        f="image2",
        update=1,
        **thread_options(info.decode),
    )
    if files.preview is None:
        return [clip, poster]
    preview = _preview_output(body[2], branch.frame, part, spec, poster_at, files.preview, info)
    return [clip, poster, preview]


def _split(stream, name: str, count: int) -> list[Any]:
    # A node's outputs are indexed without end: take exactly ``count`` of them.
    node = stream.filter_multi_output(name, count)
    return [node[i] for i in range(count)]


def preview_size(width: int, height: int) -> tuple[int, int]:
    """A preview's frame: the clip's, shrunk to ``PREVIEW_LONG_SIDE`` on its long side
    (never enlarged; even sizes, as 4:2:0 chroma requires)."""
    scale = min(1.0, PREVIEW_LONG_SIDE / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _preview_output(
    body, frame: Frame, part: Part, spec: ClipSpec, poster_at: float, path: Path, info: SourceInfo
):
    """``PREVIEW_SECONDS`` of the part from the poster's frame (earlier if the part ends
    sooner), small and silent, for a page to loop under the poster."""
    start = max(0.0, min(poster_at, part.duration - PREVIEW_SECONDS))
    width, height = preview_size(frame.width, frame.height)
    return ffmpeg.output(
        body.filter("trim", start=f"{start:.3f}", duration=f"{PREVIEW_SECONDS:.3f}")
        .filter("setpts", "PTS-STARTPTS")
        .filter("scale", width, height)
        .filter("setsar", 1)
        .filter("format", "yuv420p"),
        str(path),
        vcodec=spec.video_codec,
        preset=spec.preset,
        crf=PREVIEW_CRF,
        maxrate=PREVIEW_MAXRATE,
        bufsize=PREVIEW_MAXRATE,
        pix_fmt="yuv420p",
        r=spec.fps,
        fps_mode="cfr",
        movflags="+faststart",
        map_metadata=-1,
        map_chapters=-1,
        f="mp4",
        **CLIP_COLOR,
        **thread_options(info.decode),
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
