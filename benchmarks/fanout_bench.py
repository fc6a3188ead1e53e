"""``make bench-fanout``: what cutting a source into per-part segments costs, what each
part costs to make from its segment with one ffmpeg thread, and the time to the first
and to all clips this gives a fleet of 1, 2, 4, 8 and 16 single-core workers.

    .venv/bin/python benchmarks/fanout_bench.py [--seconds 180]

Measured, on this machine, in one run:
- the split: the source's keyframes read and one stream-copied segment cut per part
  (``segments.cut_segments``);
- every part made from its segment with every ffmpeg thread setting at 1
  (``FFMPEG_THREADS=1``), one part at a time;
- the same parts made two at a time, two processes side by side: two single-thread
  workers on this 2-core machine;
- the reference of one clip: part 1 made from the whole source with ffmpeg's default
  threads, as one worker makes it today.

Computed (``simulate``), in the platform's delivery pattern: the planning worker makes
part 1 from the whole source (the one-thread reference's time) from the start, while the
split runs beside it; each of W workers takes the next of the other parts as soon as it
is free, in the parts' order, after the split (the planning worker once its part is
done); a part costs its measured one-thread time from its segment. The time to the first
clip is part 1's; the time to all clips is when the last part ends. The rows marked
"run" are the pattern before part 1 was made beside the split: the split, then every
part from its segment. Fetching the source, uploads and messaging are not in these figures: they are the
same for every W, and measured end to end by ``make bench-e2e``.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402
from e2e_bench import make_bench_source  # noqa: E402
from transcoder_bench import LIMITS, Timing, timed  # noqa: E402

from services.transcoder.pipeline import DEFAULT_LOGO, make_part, plan_task  # noqa: E402
from services.transcoder.plan import Part  # noqa: E402
from services.transcoder.probe import SourceInfo, probe_source  # noqa: E402
from services.transcoder.segments import Segment, cut_segments  # noqa: E402
from shared.events import ClipSpec  # noqa: E402

TIMEOUT = 3600
FLEETS = (1, 2, 4, 8, 16)
SPEC = ClipSpec()


def simulate(split: float, first: float, rest: Sequence[float], workers: int) -> tuple[float, float]:
    """Time to the first and to the last clip of the platform's delivery pattern: the
    planning worker makes the first part (``first`` seconds, from the whole source) from
    the start while the split (``split`` seconds) runs beside it; ``workers`` take the
    other parts (``rest``) in order, each as soon as one is free, after the split, the
    planning worker once its part and the split are done."""
    free = [max(first, split)] + [split] * (workers - 1)
    heapq.heapify(free)
    ends = [first]
    for seconds in rest:
        start = heapq.heappop(free)
        ends.append(start + seconds)
        heapq.heappush(free, start + seconds)
    return min(ends), max(ends)


def make_from_segment(segment: Segment, folder: Path) -> Timing:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        return timed(
            lambda: make_part(
                segment.path,
                segment.info,
                segment.part,
                SPEC,
                workdir=folder,
                cards={"16:9": DEFAULT_LOGO},
                ffmpeg_timeout=TIMEOUT,
                seek_to=segment.seek_to,
            )
        )
    finally:
        shutil.rmtree(folder)


def _one_thread(info: SourceInfo) -> SourceInfo:
    return dataclasses.replace(info, decode=dataclasses.replace(info.decode, threads=1))


def bench(workdir: Path, seconds: int) -> None:
    source = make_bench_source(workdir / f"run-1080p-{seconds}s.mp4", seconds, 1920, 1080)
    info = probe_source(source, LIMITS)
    parts = plan_task(source, info, SPEC, ffmpeg_timeout=TIMEOUT)
    say(
        f"\n== fan-out ({seconds} s 1920x1080 30 fps source, {source.stat().st_size / 1e6:.0f} MB, {len(parts)} parts)"
    )

    reference = timed(lambda: make_part_whole(source, info, parts[0], workdir / "reference"))
    say(
        f"one clip's ffmpeg, whole source, default threads: {reference.wall:.2f} s wall, {reference.cpu:.2f} s cpu"
    )
    reference_1 = timed(lambda: make_part_whole(source, _one_thread(info), parts[0], workdir / "reference"))
    say(
        f"one clip's ffmpeg, whole source, one thread: {reference_1.wall:.2f} s wall, {reference_1.cpu:.2f} s cpu"
    )

    cut = workdir / "segments"
    cut.mkdir()
    segments: list[Segment] = []
    split = timed(
        lambda: segments.extend(cut_segments(source, _one_thread(info), parts, cut, timeout=TIMEOUT))
    )
    sizes = sum(segment.path.stat().st_size for segment in segments)
    say(
        f"split: {split.wall:.2f} s wall, {split.cpu:.2f} s cpu; segments {sizes / 1e6:.0f} MB "
        f"({sizes / source.stat().st_size:.2f}x the source)"
    )
    single = [dataclasses.replace(segment, info=_one_thread(segment.info)) for segment in segments]
    say("each part from its segment, one thread, one at a time:")
    timings = []
    for segment in single:
        timing = make_from_segment(segment, workdir / f"part-{segment.part.index}")
        timings.append(timing)
        say(
            f"  part {segment.part.index}: {segment.part.duration:.1f} s, {timing.wall:.2f} s wall, {timing.cpu:.2f} s cpu"
        )
    one_worker = split.wall + sum(t.wall for t in timings)

    with ProcessPoolExecutor(max_workers=2) as pool:
        pair = timed(
            lambda: list(
                pool.map(make_from_segment, single, [workdir / f"pair-{s.part.index}" for s in single])
            )
        )
    two_workers = split.wall + pair.wall
    say(f"the same parts two at a time (two one-thread workers): {pair.wall:.2f} s wall")

    say(f"\n{'workers':>7} | {'first clip s':>12} | {'all clips s':>11} | {'all / 1 worker':>14}")
    say(f"{'1 (run)':>7} | {split.wall + timings[0].wall:>12.2f} | {one_worker:>11.2f} | {1.0:>13.2f}x")
    say(f"{'2 (run)':>7} | {'':>12} | {two_workers:>11.2f} | {two_workers / one_worker:>13.2f}x")
    say("simulated, the first part made by the planning worker from the source beside the split:")
    for workers in FLEETS:
        first, last = simulate(split.wall, reference_1.wall, [t.wall for t in timings[1:]], workers)
        say(f"{workers:>7} | {first:>12.2f} | {last:>11.2f} | {last / one_worker:>13.2f}x")
    say(
        f"split / one-worker total: {100 * split.wall / one_worker:.1f} % (goal <= 5 %); "
        f"first clip / one clip's ffmpeg: {(split.wall + timings[0].wall) / reference.wall:.2f}x at its "
        f"default threads, {(split.wall + timings[0].wall) / reference_1.wall:.2f}x at one thread (goal <= 1.3x)"
    )


def make_part_whole(source: Path, info: SourceInfo, part: Part, folder: Path) -> None:
    folder.mkdir()
    try:
        make_part(
            source, info, part, SPEC, workdir=folder, cards={"16:9": DEFAULT_LOGO}, ffmpeg_timeout=TIMEOUT
        )
    finally:
        shutil.rmtree(folder)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=180, help="length of the generated source")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="idrl-bench-fanout-") as scratch:
        bench(Path(scratch), args.seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
