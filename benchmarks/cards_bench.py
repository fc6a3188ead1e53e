"""What card text costs: drawing a card, and one clip with text against one without.

    .venv/bin/python benchmarks/cards_bench.py [--draws 20] [--seconds 20]

Part 1: :func:`services.transcoder.cards.card_images` draws and writes the card of each
frame (1280x720, 720x1280, 1080x1080) ``--draws`` times with a title and a subtitle;
the median milliseconds per card are printed (the logo is decoded once per worker, as
in service). Part 2: one part of a ``--seconds`` s 1280x720 source with sound, made by
the pipeline with the default spec, once without card text and once with it, in that
order; the wall times and ffmpeg's CPU time (user + system of the child processes,
steadier than wall time on a busy machine) are printed. Figures only (no target): each
is measured once, beside the load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402

from services.transcoder.cards import card_images  # noqa: E402
from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips  # noqa: E402
from services.transcoder.probe import SourceLimits, probe_source  # noqa: E402
from shared.events import CardText, ClipSpec  # noqa: E402
from tests.support.media import make_source  # noqa: E402

LIMITS = SourceLimits(max_bytes=4 * 10**9, max_seconds=3600, max_width=7680, max_height=4320)
CARD = CardText(title="Ana María Pérez #27", subtitle="Regional Sprint · 2026-11-28")
FRAMES = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1080, 1080)}


def drawing(draws: int, scratch: Path) -> None:
    card_images(CARD, DEFAULT_LOGO, {"16:9": (320, 180)}, scratch)  # font and logo loaded
    for name, frame in FRAMES.items():
        times = []
        for _ in range(draws):
            started = time.perf_counter()
            card_images(CARD, DEFAULT_LOGO, {name: frame}, scratch)
            times.append(time.perf_counter() - started)
        say(
            f"draw {frame[0]}x{frame[1]}: {1000 * statistics.median(times):.0f} ms per card "
            f"(median of {draws}; load average {os.getloadavg()[0]:.1f})"
        )


def one_part(seconds: float, scratch: Path) -> None:
    source = make_source(scratch / "source.mp4", seconds=seconds, width=1280, height=720)
    info = probe_source(source, LIMITS)
    walls, cpus = {}, {}
    for label, card in (("without text", None), ("with text", CARD)):
        workdir = scratch / label.replace(" ", "-")
        workdir.mkdir()
        cpu_before, started = _children_cpu(), time.perf_counter()
        (clip,) = iter_clips(source, info, ClipSpec(card=card), workdir=workdir, ffmpeg_timeout=1800)
        walls[label] = time.perf_counter() - started
        cpus[label] = _children_cpu() - cpu_before
        say(
            f"one {seconds:.0f} s part {label}: {walls[label]:.2f} s wall, {cpus[label]:.2f} s ffmpeg CPU "
            f"({clip.duration_seconds:.1f} s clip; load average {os.getloadavg()[0]:.1f})"
        )
    say(
        f"text costs {walls['with text'] - walls['without text']:+.2f} s wall, "
        f"{cpus['with text'] - cpus['without text']:+.2f} s CPU on this part"
    )


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    arguments = parser.parse_args()
    say(machine())
    with tempfile.TemporaryDirectory(prefix="cards-bench-") as scratch:
        drawing(arguments.draws, Path(scratch))
        one_part(arguments.seconds, Path(scratch))


if __name__ == "__main__":
    main()
