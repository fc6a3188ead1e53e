"""``make bench``: the transcoder's clip pipeline against a reference bound, and the
worker's memory and cancellation latency.

    .venv/bin/python benchmarks/transcoder_bench.py [--repeat N] [--skip-pipeline] [--skip-worker]

Part 1, pipeline / bound. Four sources are generated with ffmpeg's test sources:
1080x1920 portrait 45 s with audio, 1920x1080 landscape 45 s with audio, 3840x2160
60 fps 25 s with audio, 1280x720 30 s without audio. For every clip the pipeline makes
(one ffmpeg run: cards, fit, encode, poster) the wall time is printed beside a bound
measured in the same run: decoding that part alone (``-f null``) plus encoding a
synthetic source (testsrc2) of the output geometry and duration alone, with the same
encoder settings. Target: pipeline / bound <= 1.15 for every clip (exit status 1 if not).
With ``--repeat N`` each time is the best of N runs.

Part 2, the worker. A local stack (PostgreSQL, the emulators, one transcoder worker and
the notifier) processes a 500 MB source uploaded to the uploads bucket; the worker
process's own peak resident memory (VmHWM, not ffmpeg's) must stay under 200 MB. Then
a slow task is canceled while ffmpeg runs (as DELETE /tasks does: the row becomes
canceled); the time until the worker's ffmpeg is gone must stay under 5 s.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402

from infra.local.process import RssSampler  # noqa: E402
from services.transcoder.graph import AUDIO_BITRATE, build_clip_command  # noqa: E402
from services.transcoder.pipeline import DEFAULT_LOGO  # noqa: E402
from services.transcoder.plan import plan_parts  # noqa: E402
from services.transcoder.probe import SourceLimits, probe_source  # noqa: E402
from services.transcoder.runner import run_ffmpeg  # noqa: E402
from shared.events import ClipSpec  # noqa: E402
from tests.support.media import ffmpeg  # noqa: E402

RATIO_TARGET = 1.15
RSS_BUDGET_MB = 200
CANCEL_BUDGET_SECONDS = 5.0
LIMITS = SourceLimits(max_bytes=4 * 10**9, max_seconds=3600, max_width=7680, max_height=4320)


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # user + system seconds of the ffmpeg processes

    def __add__(self, other: Timing) -> Timing:
        return Timing(self.wall + other.wall, self.cpu + other.cpu)


def timed(action: Callable[[], object]) -> Timing:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    action()
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return Timing(wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)


def best_of(actions: list[Callable[[], object]], repeat: int) -> list[Timing]:
    """The best wall and CPU time of each action over ``repeat`` rounds. The actions run
    in turn within a round, so a burst of load from elsewhere hits them alike."""
    rounds = [[timed(action) for action in actions] for _ in range(repeat)]
    return [
        Timing(min(r[i].wall for r in rounds), min(r[i].cpu for r in rounds)) for i in range(len(actions))
    ]


# --- part 1: pipeline against the bound ----------------------------------------------


@dataclass(frozen=True)
class BenchSource:
    name: str
    width: int
    height: int
    fps: int
    seconds: int
    audio: bool

    def generate(self, folder: Path) -> Path:
        path = folder / f"{self.name}.mp4"
        args = ["-f", "lavfi", "-i", f"testsrc2=s={self.width}x{self.height}:r={self.fps}:d={self.seconds}"]
        if self.audio:
            args += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={self.seconds}"]
        # A phone-like stream: H.264 High with B-frames, a keyframe every 2 s, AAC.
        args += [
            "-c:v",
            "libx264",
            "-preset",
            "superfast",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-g",
            str(2 * self.fps),
        ]
        if self.audio:
            args += ["-c:a", "aac", "-b:a", "128k"]
        ffmpeg(*args, str(path))
        return path


SOURCES = (
    BenchSource("portrait-1080x1920-45s", 1080, 1920, 30, 45, audio=True),
    BenchSource("landscape-1920x1080-45s", 1920, 1080, 30, 45, audio=True),
    BenchSource("uhd-3840x2160-60fps-25s", 3840, 2160, 60, 25, audio=True),
    BenchSource("hd-1280x720-30s-silent", 1280, 720, 30, 30, audio=False),
)


def decode_alone(source: Path, start: float, seconds: float, audio: bool) -> None:
    maps = ["-map", "0:v:0"] + (["-map", "0:a:0"] if audio else [])
    ffmpeg("-ss", f"{start:.6f}", "-t", f"{seconds:.6f}", "-i", str(source), *maps, "-f", "null", "-")


def encode_alone(spec: ClipSpec, seconds: float, target: Path) -> None:
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=s={spec.width}x{spec.height}:r={spec.fps}:d={seconds:.6f}",
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:sample_rate={spec.audio_rate}:duration={seconds:.6f}",
        "-c:v",
        spec.video_codec,
        "-preset",
        spec.preset,
        "-crf",
        str(spec.crf),
        "-pix_fmt",
        "yuv420p",
        "-r",
        str(spec.fps),
        "-c:a",
        "aac",
        "-ar",
        str(spec.audio_rate),
        "-ac",
        "2",
        "-b:a",
        AUDIO_BITRATE,
        "-movflags",
        "+faststart",
        str(target),
    )


def bench_pipeline(workdir: Path, repeat: int) -> int:
    spec = ClipSpec()
    say(
        f"\n== pipeline / bound (spec: {spec.width}x{spec.height} {spec.fps} fps, {spec.video_codec} "
        f"{spec.preset} CRF {spec.crf}, AAC {spec.audio_rate} Hz; best of {repeat})"
    )
    header = (
        f"{'source':<24} {'clip':>4} {'part':>5} | {'pipeline':>8} {'decode':>7} {'encode':>7} "
        f"{'bound':>7} {'ratio':>5} | {'cpu pipe':>8} {'cpu bound':>9} {'ratio':>5}"
    )
    say("times in seconds; wall = elapsed, cpu = user+system of ffmpeg")
    rows = []
    for bench_source in SOURCES:
        started = time.perf_counter()
        source = bench_source.generate(workdir)
        say(
            f"generated {source.name} ({source.stat().st_size / 1e6:.0f} MB) in "
            f"{time.perf_counter() - started:.0f} s"
        )
        info = probe_source(source, LIMITS)
        for part in plan_parts(info.duration, spec):
            command = build_clip_command(
                source, info, part, spec, DEFAULT_LOGO, workdir / "clip.mp4", workdir / "clip.jpg"
            )
            decode, encode, pipeline = best_of(
                [
                    lambda source=source, part=part, info=info: decode_alone(
                        source, part.start, part.duration, info.has_audio
                    ),
                    lambda command=command: encode_alone(
                        spec, command.expected_seconds, workdir / "synthetic.mp4"
                    ),
                    lambda command=command: run_ffmpeg(command.args, timeout=3600),
                ],
                repeat,
            )
            bound = decode + encode
            rows.append((pipeline, bound))
            if len(rows) == 1:
                say(header)
            say(
                f"{bench_source.name:<24} {part.index:>4} {part.duration:>5.1f} | {pipeline.wall:>8.2f} "
                f"{decode.wall:>7.2f} {encode.wall:>7.2f} {bound.wall:>7.2f} {pipeline.wall / bound.wall:>5.2f} | "
                f"{pipeline.cpu:>8.2f} {bound.cpu:>9.2f} {pipeline.cpu / bound.cpu:>5.2f}"
            )
        source.unlink()
    worst = max(pipeline.wall / bound.wall for pipeline, bound in rows)
    worst_cpu = max(pipeline.cpu / bound.cpu for pipeline, bound in rows)
    pipeline_total = sum((p for p, _ in rows), Timing(0, 0))
    bound_total = sum((b for _, b in rows), Timing(0, 0))
    say(
        f"worst wall ratio {worst:.2f} (target <= {RATIO_TARGET}), worst cpu ratio {worst_cpu:.2f}; "
        f"all clips: wall {pipeline_total.wall:.1f} / {bound_total.wall:.1f} s = "
        f"{pipeline_total.wall / bound_total.wall:.2f}, cpu {pipeline_total.cpu:.1f} / {bound_total.cpu:.1f} s = "
        f"{pipeline_total.cpu / bound_total.cpu:.2f}; load average {os.getloadavg()[0]:.1f}"
    )
    return 0 if worst <= RATIO_TARGET else 1


# --- part 2: the worker's memory and cancellation ------------------------------------


def make_large_source(folder: Path, target_bytes: int) -> Path:
    """A Motion-JPEG movie of noisy 1080p frames (incompressible, so it is big) of at
    least ``target_bytes``, with audio."""
    sample = folder / "sample.mov"
    video = "testsrc2=s=1920x1080:r=30:d={d},noise=alls=60:allf=t"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        video.format(d=1),
        "-c:v",
        "mjpeg",
        "-q:v",
        "2",
        "-pix_fmt",
        "yuvj420p",
        str(sample),
    )
    seconds = max(2, int(target_bytes / sample.stat().st_size) + 1)
    sample.unlink()
    path = folder / "large.mov"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        video.format(d=seconds),
        "-f",
        "lavfi",
        "-i",
        f"sine=duration={seconds}",
        "-c:v",
        "mjpeg",
        "-q:v",
        "2",
        "-pix_fmt",
        "yuvj420p",
        "-c:a",
        "aac",
        "-shortest",
        str(path),
    )
    return path


def bench_worker(workdir: Path) -> int:
    from google.cloud import storage as _storage  # noqa: F401  (import before the env is set)
    from sqlalchemy import func, insert, select, update

    from infra.local import LocalStack, StackConfig, free_ports
    from shared.config import Settings
    from shared.db import create_engine
    from shared.events import TaskSubmitted
    from shared.pubsub import Publisher
    from shared.storage import gs_uri, storage_client
    from shared.tables import clips, tasks, users

    say("\n== worker: peak memory on a 500 MB source, cancellation latency")
    started = time.perf_counter()
    large = make_large_source(workdir, 500 * 10**6)
    say(
        f"generated {large.name}: {large.stat().st_size / 1e6:.0f} MB in {time.perf_counter() - started:.0f} s"
    )
    slow = BenchSource("slow", 1920, 1080, 30, 20, audio=True).generate(workdir)

    state_dir = workdir / "stack"
    config = StackConfig(
        state_dir=state_dir,
        postgres_dir=state_dir / "pg",
        storage_in_memory=True,
        pubsub_emulator="pstest",
        services=["transcoder", "notifier"],
        transcoder_workers=1,
        **free_ports(),
    )
    with LocalStack(config) as stack:
        os.environ["PUBSUB_EMULATOR_HOST"] = stack.pubsub_emulator_host or ""
        os.environ["STORAGE_EMULATOR_HOST"] = stack.storage_emulator_host or ""
        settings = Settings(**stack.settings_values)
        engine = create_engine(settings)
        (worker,) = [process for _, process in stack.processes if process.name == "transcoder-1"]
        worker_process = psutil.Process(worker.pid)

        def submit(path: Path, spec: ClipSpec) -> uuid.UUID:
            owner, task_id = uuid.uuid4(), uuid.uuid4()
            name = f"uploads/{task_id}/{path.name}"
            storage_client().bucket(settings.uploads_bucket).blob(
                name, chunk_size=8 * 1024 * 1024
            ).upload_from_filename(str(path))
            source = gs_uri(settings.uploads_bucket, name)
            with engine.begin() as conn:
                conn.execute(
                    insert(users).values(
                        id=owner,
                        username=f"bench{owner.hex[:8]}",
                        email=f"{owner.hex[:8]}@example.com",
                        password_hash="x",
                    )
                )
                conn.execute(
                    insert(tasks).values(
                        id=task_id,
                        owner_id=owner,
                        source_kind="upload",
                        source=source,
                        spec=spec.model_dump(mode="json"),
                    )
                )
            event = TaskSubmitted(task_id=task_id, owner_id=owner, source=source, spec=spec)
            Publisher(settings).publish(settings.topic_video_tasks, event).result(60)
            return task_id

        def status(task_id: uuid.UUID) -> str:
            with engine.connect() as conn:
                return conn.execute(select(tasks.c.status).where(tasks.c.id == task_id)).scalar_one()

        def ffmpeg_children() -> list[psutil.Process]:
            return [p for p in worker_process.children(recursive=True) if p.name() == "ffmpeg"]

        log_path = config.logs_dir / "transcoder-1.log"
        deadline = time.monotonic() + 60
        while "pulling" not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.1)
        before = worker_process.memory_info().rss
        task_id = submit(large, ClipSpec())
        started = time.perf_counter()
        with RssSampler(worker_process) as sampler:
            while status(task_id) not in ("processed", "failed"):
                time.sleep(0.02)
        elapsed = time.perf_counter() - started
        sampled_peak = max(before, sampler.peak)
        peak = _vm_hwm(worker.pid)
        with engine.connect() as conn:
            sizes = (
                conn.execute(
                    select(clips.c.size_bytes).where(clips.c.task_id == task_id).order_by(clips.c.index)
                )
                .scalars()
                .all()
            )
        say(
            f"{large.stat().st_size / 1e6:.0f} MB source: {status(task_id)} in {elapsed:.1f} s (download from "
            f"the uploads bucket, probe, clips, upload); clips of "
            f"{', '.join(f'{size / 1e6:.0f} MB' for size in sizes)}"
        )
        say(
            f"worker RSS before: {before / 1e6:.1f} MB, sampled peak: {sampled_peak / 1e6:.1f} MB, "
            f"VmHWM (peak of the process's life): {peak / 1e6:.1f} MB (budget < {RSS_BUDGET_MB} MB)"
        )
        result = 0 if peak < RSS_BUDGET_MB * 1e6 and status(task_id) == "processed" else 1

        task_id = submit(slow, ClipSpec(preset="slow"))
        deadline = time.monotonic() + 120
        while not ffmpeg_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        running = ffmpeg_children()
        if not running:
            say("cancellation: ffmpeg never started")
            return 1
        time.sleep(2)  # mid-run
        with engine.begin() as conn:
            conn.execute(
                update(tasks).where(tasks.c.id == task_id).values(status="canceled", deleted_at=func.now())
            )
        canceled_at = time.perf_counter()
        _, alive = psutil.wait_procs(running, timeout=30)
        latency = time.perf_counter() - canceled_at
        say(
            f"cancellation: ffmpeg gone {latency:.2f} s after the row was canceled "
            f"(budget < {CANCEL_BUDGET_SECONDS:.0f} s; polling every "
            f"{settings.cancel_poll_seconds:.0f} s)"
        )
        if alive or latency >= CANCEL_BUDGET_SECONDS:
            result = 1
        engine.dispose()
    return result


def _vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    status = 0
    with tempfile.TemporaryDirectory(prefix="idrl-bench-transcoder-") as scratch:
        workdir = Path(scratch)
        if not args.skip_pipeline:
            status |= bench_pipeline(workdir, args.repeat)
        if not args.skip_worker:
            status |= bench_worker(workdir)
    say("\nresult: " + ("within target" if status == 0 else "OFF TARGET"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
