"""``make bench-loudness``: what two-pass loudness normalization adds to a clip.

    .venv/bin/python benchmarks/loudness_bench.py [--repeat N]

For each source (generated like the transcoder benchmark's: phone-like H.264 with AAC,
20 s, one full part) three runs are timed, each the best of N:
- pass 1, the audio-only measuring run of the part (``loudness.measure_part``);
- the clip's run without a loudness (today's clip, the default spec);
- the clip's run with the part's loudnorm filter (pass 2).
Printed: wall and CPU seconds (user + system of ffmpeg), and the extra a normalized clip
costs, as a share of the clip's run without it. Figures only, no target.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402
from transcoder_bench import LIMITS, BenchSource, Timing, best_of  # noqa: E402

from services.transcoder.graph import build_clip_command  # noqa: E402
from services.transcoder.loudness import loudnorm_arguments, measure_part  # noqa: E402
from services.transcoder.pipeline import DEFAULT_LOGO  # noqa: E402
from services.transcoder.plan import plan_parts  # noqa: E402
from services.transcoder.probe import probe_source  # noqa: E402
from services.transcoder.runner import run_ffmpeg  # noqa: E402
from shared.events import ClipSpec, LoudnessSpec  # noqa: E402

SOURCES = (
    BenchSource("landscape-1920x1080-20s", 1920, 1080, 30, 20, audio=True),
    BenchSource("portrait-1080x1920-20s", 1080, 1920, 30, 20, audio=True),
)


def bench(workdir: Path, repeat: int) -> None:
    spec = ClipSpec()
    say(
        f"\n== loudness (spec: {spec.width}x{spec.height} {spec.preset} CRF {spec.crf}; "
        f"target {LoudnessSpec().target_lufs} LUFS, {LoudnessSpec().true_peak_dbtp} dBTP; best of {repeat})"
    )
    say(
        "times in seconds; wall = elapsed, cpu = user+system of ffmpeg; extra = (pass 1 + pass 2 - clip) / clip"
    )
    say(
        f"{'source':<26} | {'pass 1':>6} {'clip':>6} {'pass 2':>6} {'extra':>6} | "
        f"{'cpu p1':>6} {'cpu clip':>8} {'cpu p2':>6} {'extra':>6}"
    )
    for bench_source in SOURCES:
        source = bench_source.generate(workdir)
        pass_1, clip, pass_2 = time_source(source, workdir, repeat)
        extra = Timing(pass_1.wall + pass_2.wall - clip.wall, pass_1.cpu + pass_2.cpu - clip.cpu)
        say(
            f"{bench_source.name:<26} | {pass_1.wall:>6.2f} {clip.wall:>6.2f} {pass_2.wall:>6.2f} "
            f"{100 * extra.wall / clip.wall:>5.1f}% | {pass_1.cpu:>6.2f} {clip.cpu:>8.2f} {pass_2.cpu:>6.2f} "
            f"{100 * extra.cpu / clip.cpu:>5.1f}%"
        )
        source.unlink()
    say(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} vCPU")


def time_source(source: Path, workdir: Path, repeat: int) -> list[Timing]:
    """Pass 1, the clip without a loudness, the clip with its loudnorm: best of ``repeat``."""
    spec = ClipSpec()
    normalized = spec.model_copy(update={"loudness": LoudnessSpec()})
    info = probe_source(source, LIMITS)
    (part,) = plan_parts(info.duration, spec)
    measurement = measure_part(source, info, part, normalized, timeout=600)
    plain = build_clip_command(source, info, part, spec, DEFAULT_LOGO, workdir / "c.mp4", workdir / "c.jpg")
    loud = build_clip_command(
        source,
        info,
        part,
        normalized,
        DEFAULT_LOGO,
        workdir / "c.mp4",
        workdir / "c.jpg",
        loudnorm=loudnorm_arguments(measurement, LoudnessSpec()),
    )
    return best_of(
        [
            lambda: measure_part(source, info, part, normalized, timeout=600),
            lambda: run_ffmpeg(plain.args, timeout=3600),
            lambda: run_ffmpeg(loud.args, timeout=3600),
        ],
        repeat,
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="idrl-bench-loudness-") as scratch:
        bench(Path(scratch), args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
