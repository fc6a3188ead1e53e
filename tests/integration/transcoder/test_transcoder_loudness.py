"""Loudness normalization with real ffmpeg, checked by an independent meter.

The clips' content (the part between the cards) is decoded and measured with pyloudnorm
(ITU-R BS.1770-4) and a true peak of our own (4x oversampled), not with ffmpeg's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.transcoder.errors import ProcessingStopped
from services.transcoder.loudness import measure_part
from services.transcoder.pipeline import iter_clips
from services.transcoder.plan import Part
from services.transcoder.probe import SourceLimits, probe_source
from services.transcoder.runner import StopSignal
from shared.events import ClipSpec, LoudnessSpec
from tests.support.loudness import (
    RATE,
    at_loudness,
    decoded_audio,
    integrated_lufs,
    make_source_with_sound,
    music_like,
    speech_like,
    tone,
    true_peak_dbtp,
)
from tests.support.media import ffprobe, make_video

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
SECONDS = 4.0
SPEC = ClipSpec(width=320, height=180, preset="ultrafast")
TARGET = LoudnessSpec()  # -14 LUFS, -1 dBTP
# Clear of the cuts between the cards and the part (AAC frames, resampler edges).
EDGE = 0.05


def make_clips(source: Path, workdir: Path, spec: ClipSpec):
    info = probe_source(source, LIMITS)
    return list(iter_clips(source, info, spec, workdir=workdir, ffmpeg_timeout=300))


def content(clip_path: Path, part_seconds: float, spec: ClipSpec = SPEC) -> np.ndarray:
    """The clip's audio between its cards."""
    return decoded_audio(clip_path, spec.card_seconds + EDGE, part_seconds - 2 * EDGE)


SOUNDS = {
    # Peaky and gappy: raising it 16 dB pushes its peaks over the ceiling, so loudnorm's
    # limiter has to hold them.
    "speech-like at -30 LUFS": lambda: speech_like(SECONDS, -30),
    "music-like at -24 LUFS": lambda: music_like(SECONDS, -24),
    "1 kHz tone at -30 LUFS": lambda: tone(SECONDS, -30),
    "1 kHz tone at -6 LUFS": lambda: tone(SECONDS, -6),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    scratch = tmp_path_factory.mktemp("loudness-sources")
    return {
        name: make_source_with_sound(scratch / f"source-{i}.mp4", make())
        for i, (name, make) in enumerate(SOUNDS.items())
    }


@pytest.mark.parametrize("name", SOUNDS)
def test_a_clip_s_content_is_brought_to_the_target_under_the_ceiling(name, sources, tmp_path):
    source = sources[name]
    before = integrated_lufs(decoded_audio(source, 0, SECONDS))
    (clip,) = make_clips(source, tmp_path, SPEC.model_copy(update={"loudness": TARGET}))
    audio = content(clip.path, SECONDS)
    assert abs(integrated_lufs(audio) - TARGET.target_lufs) <= 1.0, f"source at {before:.1f} LUFS"
    # The delivered (AAC) clip keeps the ceiling: the limiter aims under it by the
    # headroom AAC's encoding eats.
    assert true_peak_dbtp(audio) <= TARGET.true_peak_dbtp
    assert abs(clip.duration_seconds - (SECONDS + 2 * SPEC.card_seconds)) <= 1 / SPEC.fps
    (stream,) = [s for s in ffprobe(clip.path)["streams"] if s["codec_type"] == "audio"]
    assert int(stream["sample_rate"]) == 48000 and stream["channels"] == 2  # not loudnorm's 192 kHz


@pytest.mark.parametrize("name", ["speech-like at -30 LUFS", "1 kHz tone at -6 LUFS"])
def test_without_a_loudness_the_source_s_levels_are_kept(name, sources, tmp_path):
    source = sources[name]
    (clip,) = make_clips(source, tmp_path, SPEC)
    before = integrated_lufs(decoded_audio(source, EDGE, SECONDS - 2 * EDGE))
    assert abs(integrated_lufs(content(clip.path, SECONDS)) - before) <= 1.0


def test_each_part_is_measured_on_its_own(tmp_path):
    quiet, loud = tone(2, -36), at_loudness(speech_like(2, -20), -10)
    source = make_source_with_sound(tmp_path / "quiet-then-loud.mp4", np.concatenate([quiet, loud]))
    spec = SPEC.model_copy(update={"loudness": TARGET, "max_part_seconds": 2.0})
    clips = make_clips(source, tmp_path, spec)
    assert len(clips) == 2
    for clip in clips:
        audio = content(clip.path, 2.0)
        assert abs(integrated_lufs(audio) - TARGET.target_lufs) <= 1.0, clip.part
        assert true_peak_dbtp(audio) <= TARGET.true_peak_dbtp, clip.part


def test_digital_silence_stays_silent(tmp_path):
    source = make_source_with_sound(tmp_path / "silence.mp4", np.zeros((int(SECONDS * RATE), 2)))
    (clip,) = make_clips(source, tmp_path, SPEC.model_copy(update={"loudness": TARGET}))
    audio = content(clip.path, SECONDS)
    assert integrated_lufs(audio) == -np.inf
    assert np.max(np.abs(audio)) < 10 ** (-90 / 20)


def test_a_near_silent_part_is_not_raised(tmp_path):
    rng = np.random.default_rng(16)
    hiss = at_loudness(rng.standard_normal((int(SECONDS * RATE), 2)), -65)
    source = make_source_with_sound(tmp_path / "hiss.mp4", hiss)
    (clip,) = make_clips(source, tmp_path, SPEC.model_copy(update={"loudness": TARGET}))
    assert integrated_lufs(content(clip.path, SECONDS)) < -60


def test_a_source_without_audio_still_gets_silence(tmp_path):
    source = make_video(tmp_path / "mute.mp4", width=320, height=180, seconds=2, audio=False)
    (clip,) = make_clips(source, tmp_path, SPEC.model_copy(update={"loudness": TARGET}))
    assert np.max(np.abs(content(clip.path, 2.0))) == 0


def test_a_stop_ends_the_measuring_run(sources):
    source = sources["music-like at -24 LUFS"]
    info = probe_source(source, LIMITS)
    stop = StopSignal()
    stop.set("the task was canceled")
    with pytest.raises(ProcessingStopped, match="canceled"):
        measure_part(source, info, Part(1, 0.0, SECONDS), SPEC, timeout=60, stop=stop)
