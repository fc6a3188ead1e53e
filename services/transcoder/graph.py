"""The one ffmpeg command that makes a clip: logo card + part + logo card, and a poster.

Built with ffmpeg-python and returned as an argument list; nothing runs here. The graph::

    [logo] scale+pad to WxH, setsar=1, yuv420p, loop 1 frame -> card frames --split--> card A, card B
    [source part] (ffmpeg autorotates on decode) fps=30, zscale to the fit, pad|crop to WxH,
                  setsar=1, yuv420p --split--> clip body, poster branch
    [source audio | silence] aformat 48 kHz stereo fltp
    [silence] --asplit--> card A audio, card B audio (each trimmed to the card length)
    concat(card A, body, card B; v=1 a=1) -> H.264 + AAC, +faststart   -> part-NN.mp4
    poster branch: trim to a frame inside the part, full-range 4:2:0    -> part-NN.jpg

The part is cut by input seeking (``-ss``/``-t`` before ``-i``), so only that part is
decoded. ``fps`` runs before ``scale`` so a 60 fps source is thinned before the costly
step, and the source is scaled exactly once, straight to the fitted size, by zimg.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg

from services.transcoder.hardening import LOGO_INPUT_OPTIONS, SOURCE_INPUT_OPTIONS, local_url
from services.transcoder.plan import Part, fit_geometry
from services.transcoder.probe import SourceInfo
from shared.events import ClipSpec

AUDIO_BITRATE = "128k"
POSTER_QUALITY = 3  # mjpeg -q:v; 2 (best) .. 31


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
) -> ClipCommand:
    """The ffmpeg arguments that turn ``part`` of ``source`` into one clip and its poster."""
    width, height, fps = spec.width, spec.height, spec.fps
    card = spec.card_seconds
    card_frames = max(1, round(card * fps))
    card = card_frames / fps  # a card is a whole number of frames
    fit = fit_geometry(info.display_width, info.display_height, width, height, spec.fit)

    src = ffmpeg.input(
        local_url(source), ss=f"{part.start:.6f}", t=f"{part.duration:.6f}",
        **SOURCE_INPUT_OPTIONS,
    )
    logo_in = ffmpeg.input(local_url(logo), f="image2", **LOGO_INPUT_OPTIONS)
    silence_seconds = 2 * card + (0 if info.has_audio else part.duration)
    silence = ffmpeg.input(
        f"anullsrc=r={spec.audio_rate}:cl=stereo", f="lavfi", t=f"{silence_seconds + 1:.3f}",
        format_whitelist="lavfi",
    )

    cards = (
        logo_in.video
        .filter("scale", width, height, force_original_aspect_ratio="decrease")
        .filter("pad", width, height, "(ow-iw)/2", "(oh-ih)/2", color="black")
        .filter("setsar", 1)
        .filter("format", "yuv420p")
        .filter("loop", loop=card_frames - 1, size=1, start=0)
        .filter("setpts", f"N/({fps}*TB)")
        .filter_multi_output("split", 2)
    )

    # zimg (zscale) resamples with a kernel widened to the shrink factor, so a 4K source
    # does not alias, and costs less CPU than swscale's area or bicubic (see
    # docs/benchmarks.md). Only the size changes: no colour conversion is asked for.
    body = (
        src[str(info.video_stream)]
        .filter("fps", fps)
        .filter("zscale", w=fit.scale_width, h=fit.scale_height, filter="bicubic")
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
        body_audio = _audio_format(src["a:0"], spec).filter("asetpts", "PTS-STARTPTS")
    else:
        body_audio = silent(silences[2], part.duration)

    joined = ffmpeg.concat(
        cards[0], silent(silences[0], card),
        body[0], body_audio,
        cards[1], silent(silences[1], card),
        v=1, a=1,
    ).node
    clip = ffmpeg.output(
        joined[0], joined[1], str(clip_path),
        vcodec=spec.video_codec, preset=spec.preset, crf=spec.crf, pix_fmt="yuv420p",
        r=fps, fps_mode="cfr",
        acodec="aac", ar=spec.audio_rate, ac=2, audio_bitrate=AUDIO_BITRATE,
        movflags="+faststart", map_metadata=-1, map_chapters=-1,
        f="mp4",
    )

    # A second into the part (or its middle), clear of a fade-in; a part of a frame or
    # two has only its first frame to offer.
    poster_at = min(1.0, part.duration / 2) if part.duration >= 2 / fps else 0.0
    poster = ffmpeg.output(
        body[1].filter("trim", start=f"{poster_at:.3f}").filter("format", "yuvj420p"),
        str(poster_path), vframes=1, q=POSTER_QUALITY, map_metadata=-1, f="image2",
        update=1,
    )
    command = (
        ffmpeg.merge_outputs(clip, poster)
        .global_args("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
                     "-progress", "pipe:1")
        .overwrite_output()
    )
    return ClipCommand(
        args=command.compile(cmd="ffmpeg"),
        clip_path=clip_path,
        poster_path=poster_path,
        expected_seconds=part.duration + 2 * card,
    )


def _audio_format(stream, spec: ClipSpec):
    return stream.filter(
        "aformat", sample_fmts="fltp", sample_rates=spec.audio_rate, channel_layouts="stereo"
    )
