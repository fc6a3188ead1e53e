"""``make bench`` (after the pipeline's own figures): what each clip option costs against
today's clip, every variant measured in the same run on the same source.

    .venv/bin/python benchmarks/options_bench.py [--repeat N] [--seconds S] [--formats-only]

The source is generated like the transcoder benchmark's (phone-like 1080p30 H.264 with
AAC) and cut into parts of 20 s. Each variant makes every clip of the source through the
real pipeline (``pipeline.iter_clips``: the runs, the clip checks, the posters) and
differs from today's clip (the default spec, whose clips are those of a submission
before options existed) in one option only:
- one extra format: 16:9 and 9:16 from the one run per part (goal: at most 1.6x one);
- loudness: the audio-only measuring run and loudnorm in the clip's run;
- card text: a title and a subtitle drawn on both cards;
- scene detection: ``split: scenes``, whose windows are searched before the first part.
The scene detection is also timed on its own, as a share of today's clips (goal: at
most 15 %). Today's clip and two formats are made again with every ffmpeg run held to
one thread (``FFMPEG_THREADS=1``), the cost of a fleet that gives each run one core. Each figure is the best of N rounds; the variants run in turn within a
round, so a burst of load from elsewhere hits them alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402
from transcoder_bench import LIMITS, BenchSource, Timing, best_of, timed  # noqa: E402

from services.transcoder.pipeline import iter_clips  # noqa: E402
from services.transcoder.plan import plan_scene_parts  # noqa: E402
from services.transcoder.probe import SourceInfo, probe_source  # noqa: E402
from services.transcoder.scenes import detect_cuts  # noqa: E402
from shared.events import CardText, ClipSpec, FormatSpec, LoudnessSpec  # noqa: E402

TIMEOUT = 3600
TWO_FORMATS_GOAL = 1.6
SCENES_GOAL = 0.15

VARIANTS: dict[str, ClipSpec] = {
    "today's clip": ClipSpec(),
    "+ one extra format": ClipSpec(formats=(FormatSpec(format="16:9"), FormatSpec(format="9:16"))),
    "+ loudness": ClipSpec(loudness=LoudnessSpec()),
    "+ card text": ClipSpec(card=CardText(title="Zoë Ångström #27", subtitle="Slalom · 12 Jan 2027")),
    "+ scene detection": ClipSpec(split="scenes"),
}


def make_clips(source: Path, info: SourceInfo, spec: ClipSpec, workdir: Path) -> None:
    folder = workdir / "clips"
    folder.mkdir()
    try:
        for _ in iter_clips(source, info, spec, workdir=folder, ffmpeg_timeout=TIMEOUT):
            pass
    finally:
        shutil.rmtree(folder)


def find_scene_parts(source: Path, info: SourceInfo) -> None:
    spec = VARIANTS["+ scene detection"]
    plan_scene_parts(
        info.duration,
        spec,
        lambda start, seconds: detect_cuts(source, info, timeout=TIMEOUT, start=start, seconds=seconds),
    )


def bench(workdir: Path, repeat: int, seconds: int) -> int:
    bench_source = BenchSource(f"landscape-1920x1080-{seconds}s", 1920, 1080, 30, seconds, audio=True)
    source = bench_source.generate(workdir)
    info = probe_source(source, LIMITS)
    say(f"\n== clip options ({bench_source.name}; every clip of it; best of {repeat})")
    actions = [(lambda spec=spec: make_clips(source, info, spec, workdir)) for spec in VARIANTS.values()]
    actions.append(lambda: find_scene_parts(source, info))
    one_thread = dataclasses.replace(info, decode=dataclasses.replace(info.decode, threads=1))
    for spec in (VARIANTS["today's clip"], VARIANTS["+ one extra format"]):
        actions.append(lambda spec=spec: make_clips(source, one_thread, spec, workdir))
    timings = best_of(actions, repeat)
    today = timings[0]
    say("times in seconds; wall = elapsed, cpu = user+system of ffmpeg; cost = variant / today's clip")
    say(f"{'variant':<22} | {'wall':>7} {'cost':>6} | {'cpu':>7} {'cost':>6}")
    names = [*VARIANTS, "scene detection alone", "today's, 1 thread", "two formats, 1 thread"]
    for name, timing in zip(names, timings):
        say(
            f"{name:<22} | {timing.wall:>7.2f} {timing.wall / today.wall:>5.2f}x | "
            f"{timing.cpu:>7.2f} {timing.cpu / today.cpu:>5.2f}x"
        )
    two_formats: Timing = timings[1]
    detection: Timing = timings[len(VARIANTS)]
    today_1, two_formats_1 = timings[-2:]
    say(
        f"two formats / one: {two_formats.cpu / today.cpu:.2f}x cpu, {two_formats.wall / today.wall:.2f}x wall "
        f"(goal <= {TWO_FORMATS_GOAL}x)"
    )
    say(
        f"one thread per run: two formats / one {two_formats_1.cpu / today_1.cpu:.2f}x cpu, "
        f"{two_formats_1.wall / today_1.wall:.2f}x wall; today's clip at one thread / at ffmpeg's "
        f"threads {today_1.cpu / today.cpu:.2f}x cpu, {today_1.wall / today.wall:.2f}x wall"
    )
    say(
        f"scene detection / today's clips: {100 * detection.cpu / today.cpu:.1f} % cpu, "
        f"{100 * detection.wall / today.wall:.1f} % wall (goal <= {100 * SCENES_GOAL:.0f} %)"
    )
    say(f"load average {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} vCPU")
    met = two_formats.cpu / today.cpu <= TWO_FORMATS_GOAL and detection.cpu / today.cpu <= SCENES_GOAL
    return 0 if met else 1


def bench_formats(workdir: Path, repeat: int, seconds: int) -> int:
    """Today's clip against two formats alone, with each round's own ratio: the spread of
    the two-format cost from one round to the next."""
    bench_source = BenchSource(f"landscape-1920x1080-{seconds}s", 1920, 1080, 30, seconds, audio=True)
    source = bench_source.generate(workdir)
    info = probe_source(source, LIMITS)
    say(f"\n== two formats against one ({bench_source.name}; {repeat} rounds)")
    specs = (VARIANTS["today's clip"], VARIANTS["+ one extra format"])
    ratios = []
    for round_ in range(1, repeat + 1):
        today, two = (timed(lambda spec=spec: make_clips(source, info, spec, workdir)) for spec in specs)
        ratios.append(two.cpu / today.cpu)
        say(
            f"round {round_}: today's {today.cpu:.2f} s cpu, two formats {two.cpu:.2f} s cpu: {ratios[-1]:.2f}x"
        )
    median = statistics.median(ratios)
    say(
        f"two formats / one: median {median:.2f}x cpu, {min(ratios):.2f}-{max(ratios):.2f}x (goal <= {TWO_FORMATS_GOAL}x)"
    )
    return 0 if median <= TWO_FORMATS_GOAL else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=60, help="length of the generated source")
    parser.add_argument(
        "--formats-only", action="store_true", help="today's clip and two formats, round by round"
    )
    args = parser.parse_args()
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="idrl-bench-options-") as scratch:
        if args.formats_only:
            return bench_formats(Path(scratch), args.repeat, args.seconds)
        return bench(Path(scratch), args.repeat, args.seconds)


if __name__ == "__main__":
    raise SystemExit(main())
