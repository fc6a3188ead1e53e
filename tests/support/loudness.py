"""Sound made to a given loudness, sources carrying it, and an independent meter for
what a clip's audio came out as (pyloudnorm's BS.1770-4, a true peak of our own)."""

from __future__ import annotations

import subprocess
import warnings
from pathlib import Path

import numpy as np
import pyloudnorm
from scipy import signal

from tests.support.media import FAST_H264

RATE = 48000
# BS.1770's true peak: the peak of the signal oversampled four times.
TRUE_PEAK_OVERSAMPLING = 4


def integrated_lufs(audio: np.ndarray, rate: int = RATE) -> float:
    """The integrated loudness of ``audio`` (samples x channels), -inf for silence."""
    with warnings.catch_warnings(), np.errstate(divide="ignore"):
        # pyloudnorm warns of clipping and divides by zero on digital silence.
        warnings.simplefilter("ignore")
        return float(pyloudnorm.Meter(rate).integrated_loudness(audio))


def true_peak_dbtp(audio: np.ndarray) -> float:
    """The true peak of ``audio`` in dBTP (BS.1770 annex 2: 4x oversampled)."""
    oversampled = signal.resample_poly(audio, TRUE_PEAK_OVERSAMPLING, 1, axis=0)
    peak = float(np.max(np.abs(oversampled)))
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def at_loudness(audio: np.ndarray, lufs: float, rate: int = RATE) -> np.ndarray:
    """``audio`` scaled by one gain to an integrated loudness of ``lufs``."""
    gain_db = lufs - integrated_lufs(audio, rate)
    return audio * 10 ** (gain_db / 20)


def tone(seconds: float, lufs: float, frequency: float = 1000, rate: int = RATE) -> np.ndarray:
    """A stereo sine of ``frequency`` Hz at ``lufs``."""
    t = np.arange(int(seconds * rate)) / rate
    wave = np.sin(2 * np.pi * frequency * t)
    return at_loudness(np.column_stack([wave, wave]), lufs, rate)


def speech_like(seconds: float, lufs: float, rate: int = RATE, seed: int = 16) -> np.ndarray:
    """Syllables of voice-band noise (300-3400 Hz, about four a second) in phrases of
    1.2 s with 0.4 s pauses, at ``lufs``: the peaky, gappy level of a voice."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    band = signal.butter(4, (300, 3400), btype="bandpass", fs=rate, output="sos")
    noise = signal.sosfilt(band, rng.standard_normal((n, 2)), axis=0)
    syllables = np.abs(np.sin(2 * np.pi * 2 * t)) ** 2
    phrases = (t % 1.6) < 1.2
    stress = 0.5 + 0.5 * rng.random(int(seconds * 4) + 1)[(t * 4).astype(int)]
    return at_loudness(noise * (syllables * phrases * stress)[:, None], lufs, rate)


def music_like(seconds: float, lufs: float, rate: int = RATE, seed: int = 16) -> np.ndarray:
    """A chord (A minor over a bass) with a little noise, swelling by 14 dB over its
    length and beating at 2 Hz, at ``lufs``: a wide loudness range."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    chord = sum(np.sin(2 * np.pi * f * t + i) / (1 + i) for i, f in enumerate((110, 220, 261.6, 329.6, 440)))
    left = chord + 0.05 * rng.standard_normal(n)
    right = np.roll(chord, rate // 100) + 0.05 * rng.standard_normal(n)
    swell = 10 ** ((-14 + 14 * t / seconds) / 20) * (0.75 + 0.25 * np.sin(2 * np.pi * 2 * t))
    return at_loudness(np.column_stack([left, right]) * swell[:, None], lufs, rate)


def make_source_with_sound(path: Path, audio: np.ndarray, rate: int = RATE) -> Path:
    """A 320x180 H.264 mp4 of the test pattern carrying ``audio`` (samples x channels,
    float) as AAC at a rate high enough to keep its level."""
    seconds = len(audio) / rate
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=s=320x180:r=30:d={seconds:.3f}",
            "-f",
            "f32le",
            "-ar",
            str(rate),
            "-ac",
            str(audio.shape[1]),
            "-i",
            "pipe:0",
            *FAST_H264,
            "-c:a",
            "aac",
            "-b:a",
            "256k",
            "-shortest",
            str(path),
        ],
        input=np.ascontiguousarray(audio, dtype="<f4").tobytes(),
        check=True,
        timeout=120,
    )
    return path


def decoded_audio(path: Path, start: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """``seconds`` of the audio of ``path`` from ``start``, decoded to float stereo."""
    pcm = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-ss",
            f"{start:.3f}",
            "-t",
            f"{seconds:.3f}",
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ar",
            str(rate),
            "-ac",
            "2",
            "-",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    return np.frombuffer(pcm, dtype="<f4").reshape(-1, 2).astype(np.float64)
