"""``make bench-e2e``: what the platform adds to ffmpeg's own time, and how many tasks a
minute one and two workers finish.

    .venv/bin/python benchmarks/e2e_bench.py [--runs 5] [--tasks 20] [--budget 1.5] [--rounds 1]

Part 1, latency: a 20 s 1920x1080 source (one part, one 22 s clip) is submitted by URL
``--runs`` times, one task at a time, to a stack with one worker. Each run times
``POST /tasks`` to ``processed`` as a client polling ``GET /tasks/<id>`` every 100 ms
sees it, then the same clip made by the transcoder's pipeline (``iter_clips``) on the
same file in this process. The difference is queueing, fetch, probe, upload and
notification. On a shared machine the load moves between the two runs, so the worker's
own ffmpeg is also timed inside the run (its child process, watched every 20 ms), and
the difference to that is shown too. Both medians must stay under ``--budget`` seconds
(exit status 1 if not). Each run is also split where the time went, from the timestamps
the platform records (task creation, the worker's ``processing`` and ``processed``
events, the notifier's commit).

Part 2, throughput: ``--tasks`` tasks submitted at once (a 10 s 640x360 source: one
12 s clip each), once on a stack with one worker and once with two; tasks per minute
from the first ``POST`` to the last ``processed`` a client sees (polled every 500 ms),
with each worker's busy time per task and its idle gap between two tasks.

Part 3, parts across the fleet: a 180 s 1920x1080 source (9 parts) submitted by URL to
a stack with one worker, then to one with two, every ffmpeg run at one thread
(``FFMPEG_THREADS=1``: the stand-in for a fleet of one-core machines on a 2-core one). A
client polling ``GET /tasks/<id>`` every 500 ms notes when each clip first appears in the
task and when the task is processed. The split step is the planning worker's own figure
(its "parts handed to the fleet in N s" log line: cutting the segments and storing
them). The reference is one clip's ffmpeg alone at one thread (the 20 s 1080p source of
part 1, made by ``iter_clips`` in this process, on the same stack just before the task
and just after it: the mean of the two). Each component's CPU seconds from the POST to
the processed answer are read from its process tree (a worker's own and its ffmpeg's
apart), to show what the stack takes from the two cores beside the workers' ffmpeg.
``--rounds`` repeats part 3, one worker then two in each round: each two-worker run is
set against its own round's one-worker run, and the ratios' medians over the rounds are
shown (one run on a shared machine moves by 10-15 %).

Every stack is a fresh local stack started through the launcher (its own PostgreSQL,
Pub/Sub fake and Storage emulator, on free ports), with the default settings.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests
import sqlalchemy
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402

from infra.local import LocalStack, StackConfig, free_ports  # noqa: E402
from infra.local.fileserver import serve_folder  # noqa: E402
from services.transcoder.pipeline import iter_clips  # noqa: E402
from services.transcoder.probe import SourceLimits, probe_source  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.events import ClipSpec  # noqa: E402
from shared.tables import task_history, tasks  # noqa: E402
from tests.support.client import PlatformClient  # noqa: E402
from tests.support.media import make_source  # noqa: E402

POLL_SECONDS = 0.1
WATCH_SECONDS = 0.02
# Parts 2 and 3's client: their figures are tens of seconds, and every answer costs the api
# and the gateway CPU that the workers of this 2-core machine would otherwise have.
LONG_RUN_POLL_SECONDS = 0.5
HTTP_TIMEOUT = 30
TASK_TIMEOUT = 900


# --- sources and where they are served ------------------------------------------------------


def make_bench_source(path: Path, seconds: float, width: int, height: int) -> Path:
    """The benchmark's sources: 30 fps, a keyframe every 2 s, x264 ``veryfast``, a
    48 kHz tone."""
    return make_source(
        path,
        seconds=seconds,
        width=width,
        height=height,
        fps=30,
        preset="veryfast",
        keyframe_every=60,
        sample_rate=48000,
        timeout=600,
    )


@contextmanager
def scratch_media(prefix: str) -> Iterator[tuple[Path, Path]]:
    """A scratch folder the local stacks' clusters can run in, and its ``media`` folder
    for the sources; both go when the block ends."""
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        workdir = Path(scratch)
        os.chmod(workdir, 0o711)  # the postgres user runs the clusters inside
        media = workdir / "media"
        media.mkdir()
        yield workdir, media


# --- stacks and clients ------------------------------------------------------------------------


@contextmanager
def stack_with(workdir: Path, workers: int, settings: dict[str, str] | None = None) -> Iterator[LocalStack]:
    """A fresh local stack with ``workers`` transcoders and the default settings, less
    the ``settings`` given (lower-case Settings fields)."""
    state_dir = workdir / f"stack-{workers}-workers-{uuid.uuid4().hex[:6]}"
    config = StackConfig(
        state_dir=state_dir,
        postgres_dir=state_dir / "pg",
        storage_in_memory=True,
        pubsub_emulator="pstest",
        transcoder_workers=workers,
        settings=settings or {},
        **free_ports(),
    )
    started = time.monotonic()
    with LocalStack(config) as stack:
        say(
            f"  stack with {workers} worker(s) up in {time.monotonic() - started:.1f} s "
            f"(logs: {config.logs_dir})"
        )
        yield stack
        dead = stack.dead()
        if dead:
            raise SystemExit(
                "stack processes died:\n"
                + "\n".join(f"{process.name}\n{process.log_excerpt()}" for process in dead)
            )


def submit(session: requests.Session, base_url: str, source_url: str) -> str:
    response = session.post(f"{base_url}/tasks", json={"url": source_url}, timeout=HTTP_TIMEOUT)
    if response.status_code != 202:
        raise SystemExit(f"POST /tasks answered {response.status_code}: {response.text}")
    return response.json()["id"]


def check_final(task: dict) -> None:
    if task["status"] in ("failed", "canceled"):
        raise SystemExit(f"task {task['id']} ended {task['status']}: {task.get('failure_reason')}")


# --- part 1: latency -------------------------------------------------------------------------------


class FfmpegWatch:
    """Watches the workers' children while a task runs and records how long each ffmpeg
    and ffprobe process lived: the clip's ffmpeg time inside the end-to-end run itself,
    measured in the same conditions (a shared machine's load shifts between two
    separate runs)."""

    def __init__(self, worker_pids: list[int]) -> None:
        self._workers = [psutil.Process(pid) for pid in worker_pids]
        self._seen: dict[int, tuple[str, float, float]] = {}
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FfmpegWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._done.wait(WATCH_SECONDS):
            now = time.time()
            for worker in self._workers:
                try:
                    children = worker.children(recursive=True)
                except psutil.NoSuchProcess:
                    continue
                for child in children:
                    try:
                        # A zombie has finished; psutil's create_time is only as exact as
                        # the boot time it adds (whole seconds): first sight is the start.
                        name = child.name()
                        if name not in ("ffmpeg", "ffprobe") or child.status() == psutil.STATUS_ZOMBIE:
                            continue
                    except psutil.NoSuchProcess:
                        continue
                    started = self._seen.get(child.pid, (name, now, now))[1]
                    self._seen[child.pid] = (name, started, now)

    def seconds(self, program: str) -> float:
        """Wall time of the ``program`` runs seen (each short by up to ``WATCH_SECONDS``)."""
        return sum(last - started for name, started, last in self._seen.values() if name == program)


@dataclass(frozen=True)
class LatencyRun:
    end_to_end: float  # POST sent -> processed seen by the client
    ffmpeg_alone: float  # iter_clips on the same file
    ffmpeg_in_run: float  # the worker's own ffmpeg during this run
    ffprobe_in_run: float  # the worker's ffprobe runs (the source, then the clip)
    # Where the end-to-end time went (seconds), from the platform's own timestamps.
    api: float  # POST sent -> task row created
    to_worker: float  # created -> the worker's processing event
    worker: float  # processing event -> processed event (fetch, probe, ffmpeg, upload)
    notifier: float  # processed event -> its commit by the notifier
    client: float  # commit -> the client's poll saw it

    @property
    def overhead(self) -> float:
        return self.end_to_end - self.ffmpeg_alone

    @property
    def overhead_in_run(self) -> float:
        return self.end_to_end - self.ffmpeg_in_run

    @property
    def worker_rest(self) -> float:
        """Inside the worker, neither ffmpeg nor ffprobe: fetch, uploads, publishing."""
        return self.worker - self.ffmpeg_in_run - self.ffprobe_in_run


def poll_until_processed(session: requests.Session, base_url: str, task_id: str) -> datetime:
    """Poll at a fixed 100 ms rate; returns the wall time the processed answer came."""
    started = time.perf_counter()
    polls = 0
    while True:
        task = session.get(f"{base_url}/tasks/{task_id}", timeout=HTTP_TIMEOUT).json()
        if task["status"] == "processed":
            return datetime.now(UTC)
        check_final(task)
        if time.perf_counter() - started > TASK_TIMEOUT:
            raise SystemExit(f"task {task_id} not processed after {TASK_TIMEOUT} s: {task}")
        polls += 1
        sleep_until(started + polls * POLL_SECONDS)


def sleep_until(instant: float) -> None:
    """Sleep until ``instant`` on ``time.perf_counter``'s clock (a fixed-rate poll's next
    turn: a slow answer shortens the wait, it does not move the schedule)."""
    time.sleep(max(0.0, instant - time.perf_counter()))


def recorded_times(engine: sqlalchemy.Engine, task_id: str) -> dict[str, datetime]:
    with engine.connect() as conn:
        created = conn.execute(select(tasks.c.created_at).where(tasks.c.id == task_id)).scalar_one()
        lines = conn.execute(
            select(task_history.c.status, task_history.c.occurred_at, task_history.c.recorded_at)
            .where(task_history.c.task_id == task_id)
            .order_by(task_history.c.id)
        ).all()
    processing = next(line for line in lines if line.status == "processing")
    processed = next(line for line in lines if line.status == "processed")
    return {
        "created": created,
        "processing": processing.occurred_at,
        "processed": processed.occurred_at,
        "committed": processed.recorded_at,
    }


def ffmpeg_alone(source: Path, threads: int = 0) -> float:
    settings = Settings()
    limits = SourceLimits(
        settings.max_source_bytes,
        settings.max_source_seconds,
        settings.max_source_width,
        settings.max_source_height,
        threads=threads,
    )
    info = probe_source(source, limits)
    with tempfile.TemporaryDirectory(prefix="idrl-bench-clip-") as workdir:
        started = time.perf_counter()
        clips = list(
            iter_clips(
                source,
                info,
                ClipSpec(),
                workdir=Path(workdir),
                ffmpeg_timeout=settings.ffmpeg_timeout_seconds,
            )
        )
        elapsed = time.perf_counter() - started
    assert len(clips) == 1, clips
    return elapsed


def latency_run(
    stack: LocalStack, session: requests.Session, engine: sqlalchemy.Engine, source: Path, source_url: str
) -> LatencyRun:
    workers = [process.pid for _, process in stack.processes if process.name.startswith("transcoder-")]
    with FfmpegWatch(workers) as watch:
        sent = datetime.now(UTC)
        started = time.perf_counter()
        task_id = submit(session, stack.base_url, source_url)
        seen = poll_until_processed(session, stack.base_url, task_id)
        end_to_end = time.perf_counter() - started
    times = recorded_times(engine, task_id)
    alone = ffmpeg_alone(source)

    def seconds(start: datetime, end: datetime) -> float:
        return (end - start).total_seconds()

    return LatencyRun(
        end_to_end=end_to_end,
        ffmpeg_alone=alone,
        ffmpeg_in_run=watch.seconds("ffmpeg"),
        ffprobe_in_run=watch.seconds("ffprobe"),
        api=seconds(sent, times["created"]),
        to_worker=seconds(times["created"], times["processing"]),
        worker=seconds(times["processing"], times["processed"]),
        notifier=seconds(times["processed"], times["committed"]),
        client=seconds(times["committed"], seen),
    )


# --- part 2: throughput ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Burst:
    workers: int
    tasks: int
    elapsed: float  # first POST -> last processed seen by the client
    busy: float  # median per task: the worker's processing event -> its processed event
    idle: float  # median gap on one worker: a processed event -> its next processing event

    @property
    def per_minute(self) -> float:
        return self.tasks * 60 / self.elapsed


def burst(stack: LocalStack, source_url: str, tasks: int, workers: int) -> Burst:
    """Submit ``tasks`` at once and wait until all are processed."""
    session = PlatformClient.sign_up(stack.base_url, "bench").session
    started = time.perf_counter()
    with ThreadPoolExecutor(min(tasks, 10)) as pool:
        ids = set(pool.map(lambda _: submit(session, stack.base_url, source_url), range(tasks)))
    while True:
        listing = session.get(
            f"{stack.base_url}/tasks", params={"max": 100, "order": 1}, timeout=HTTP_TIMEOUT
        ).json()["tasks"]
        mine = [task for task in listing if task["id"] in ids]
        for task in mine:
            check_final(task)
        if len(mine) == tasks and all(task["status"] == "processed" for task in mine):
            elapsed = time.perf_counter() - started
            break
        if time.perf_counter() - started > TASK_TIMEOUT:
            raise SystemExit(f"the burst did not finish in {TASK_TIMEOUT} s")
        time.sleep(LONG_RUN_POLL_SECONDS)
    busy, idle = worker_timeline(stack.database_url, ids)
    return Burst(workers, tasks, elapsed, busy, idle)


def worker_timeline(database_url: str, task_ids: set[str]) -> tuple[float, float]:
    """Median busy time per task and median idle gap between tasks on the same worker,
    from the worker id and the event times the notifier recorded."""
    started = func.min(task_history.c.occurred_at).filter(task_history.c.status == "processing")
    ended = func.max(task_history.c.occurred_at).filter(task_history.c.status == "processed")
    query = (
        select(tasks.c.worker_id, started, ended)
        .join_from(tasks, task_history, task_history.c.task_id == tasks.c.id)
        .where(tasks.c.id.in_(sorted(task_ids)))
        .group_by(tasks.c.id, tasks.c.worker_id)
    )
    engine = sqlalchemy.create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            rows = conn.execute(query).all()
    finally:
        engine.dispose()
    busy = [(end - start).total_seconds() for _, start, end in rows]
    gaps = []
    for worker in {row[0] for row in rows}:
        spans = sorted((start, end) for worker_id, start, end in rows if worker_id == worker)
        gaps += [(nxt[0] - prev[1]).total_seconds() for prev, nxt in zip(spans, spans[1:])]
    return statistics.median(busy), statistics.median(gaps) if gaps else 0.0


# --- part 3: clips as they are made ------------------------------------------------------------------


@dataclass(frozen=True)
class Progressive:
    round: int
    workers: int
    parts: int
    clips_seen: list[float]  # POST sent -> each clip first seen by the client, in order
    processed: float  # POST sent -> processed seen by the client
    split: float  # the planning worker's cut and store of every segment
    reference: float  # one clip's ffmpeg alone, at one thread: the mean of before and after
    cpu: dict[str, tuple[float, float]]  # component -> (its own CPU s, its children's) in the run


def tree_cpu(pid: int | None) -> tuple[float, float]:
    """CPU seconds so far of one stack component: its own process's, and its children's
    (those it has waited for, and those still running, each with what they waited for)."""
    if pid is None:
        return 0.0, 0.0
    try:
        process = psutil.Process(pid)
        times = process.cpu_times()
        descendants = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    children = times.children_user + times.children_system
    for child in descendants:
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # ended between the listing and the read: its time is not yet its parent's
        children += child_times.user + child_times.system
        children += child_times.children_user + child_times.children_system
    return times.user + times.system, children


def stack_cpu(stack: LocalStack) -> dict[str, tuple[float, float]]:
    """Each component's CPU seconds so far, and this process's (the client and the file
    server the source is fetched from) as ``bench client``."""
    here = psutil.Process().cpu_times()
    readings = {process.name: tree_cpu(process.pid) for _, process in stack.processes}
    return readings | {"bench client": (here.user + here.system, 0.0)}


def cpu_between(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    zero = (0.0, 0.0)
    return {
        name: (own - before.get(name, zero)[0], children - before.get(name, zero)[1])
        for name, (own, children) in after.items()
    }


ONE_THREAD = {"ffmpeg_threads": "1"}


def split_seconds(stack: LocalStack) -> float:
    """The split step's seconds, from the planning worker's log line."""
    for log in sorted(stack.config.logs_dir.glob("transcoder-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if '"split_seconds"' in line:
                return float(json.loads(line)["split_seconds"])
    raise SystemExit("no worker logged its split step: was the task made across the fleet?")


def progressive_run(
    stack: LocalStack, round_: int, workers: int, source_url: str, reference_source: Path
) -> Progressive:
    session = PlatformClient.sign_up(stack.base_url, "bench").session
    reference_before = ffmpeg_alone(reference_source, threads=1)
    cpu_before = stack_cpu(stack)
    started = time.perf_counter()
    task_id = submit(session, stack.base_url, source_url)
    seen: dict[int, float] = {}
    polls = 0
    while True:
        task = session.get(f"{stack.base_url}/tasks/{task_id}", timeout=HTTP_TIMEOUT).json()
        now = time.perf_counter() - started
        for clip in task["clips"]:
            seen.setdefault(clip["index"], now)
        if task["status"] == "processed":
            break
        check_final(task)
        if now > TASK_TIMEOUT:
            raise SystemExit(f"task {task_id} not processed after {TASK_TIMEOUT} s: {task}")
        polls += 1
        sleep_until(started + polls * LONG_RUN_POLL_SECONDS)
    cpu = cpu_between(cpu_before, stack_cpu(stack))
    return Progressive(
        round_,
        workers,
        task["clips_total"],
        sorted(seen.values()),
        now,
        split_seconds(stack),
        statistics.mean((reference_before, ffmpeg_alone(reference_source, threads=1))),
        cpu,
    )


# --- report -----------------------------------------------------------------------------------------


def latency_table(runs: list[LatencyRun]) -> str:
    columns = [
        ("POST → processed (client)", "end_to_end"),
        ("ffmpeg alone", "ffmpeg_alone"),
        ("**difference**", "overhead"),
        ("ffmpeg in the run", "ffmpeg_in_run"),
        ("difference in the run", "overhead_in_run"),
        ("api", "api"),
        ("to worker", "to_worker"),
        ("worker", "worker"),
        ("worker's ffprobe", "ffprobe_in_run"),
        ("worker's fetch, upload, publish", "worker_rest"),
        ("notifier", "notifier"),
        ("client poll", "client"),
    ]
    rows = ["| run | " + " | ".join(title for title, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for number, run in enumerate(runs, 1):
        rows.append(
            f"| {number} | " + " | ".join(f"{getattr(run, field):.2f}" for _, field in columns) + " |"
        )
    medians = [statistics.median(getattr(run, field) for run in runs) for _, field in columns]
    rows.append("| **median** | " + " | ".join(f"**{value:.2f}**" for value in medians) + " |")
    return "\n".join(rows)


def fleet_table(fleet: list[Progressive]) -> str:
    """Part 3's runs, each round's two-worker run against its own one-worker run, and the
    medians of the ratios over the rounds."""
    rows = [
        "| round | workers | parts | split | first clip seen | last clip seen | processed seen "
        "| one clip's ffmpeg alone (1 thread) | first clip / one clip alone | all clips / 1 worker "
        "| split / 1-worker total |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    alone = {run.round: run.processed for run in fleet if run.workers == 1}
    ratios: dict[tuple[str, int], list[float]] = {}
    for run in fleet:
        first, whole, split = (
            run.clips_seen[0] / run.reference,
            run.processed / alone[run.round],
            run.split / alone[run.round],
        )
        for name, value in (("first", first), ("whole", whole), ("split", split)):
            ratios.setdefault((name, run.workers), []).append(value)
        rows.append(
            f"| {run.round} | {run.workers} | {run.parts} | {run.split:.2f} s | {run.clips_seen[0]:.1f} s "
            f"| {run.clips_seen[-1]:.1f} s | {run.processed:.1f} s | {run.reference:.1f} s "
            f"| {first:.2f} | {whole:.2f} | {100 * split:.1f} % |"
        )
    for workers in (1, 2):
        median = {name: statistics.median(ratios[name, workers]) for name in ("first", "whole", "split")}
        rows.append(
            f"| **median** | {workers} | | | | | | | **{median['first']:.2f}** | **{median['whole']:.2f}** "
            f"| {100 * median['split']:.1f} % |"
        )
    return "\n".join(rows)


def cpu_table(fleet: list[Progressive]) -> str:
    """Part 3's CPU seconds by component, each run's column "own + children" (a worker's
    children are its ffmpeg and ffprobe), against the machine's CPU in the run."""
    names = sorted(
        {name for run in fleet for name in run.cpu}, key=lambda name: (name.startswith("bench"), name)
    )
    header = (
        "| component | "
        + " | ".join(f"round {run.round}, {run.workers} worker(s): own + children" for run in fleet)
        + " |"
    )
    rows = [header, "|---" * (len(fleet) + 1) + "|"]
    for name in names:
        cells = []
        for run in fleet:
            own, children = run.cpu.get(name, (0.0, 0.0))
            cells.append(f"{own:.1f} + {children:.1f} s" if children else f"{own:.1f} s")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    cores = psutil.cpu_count() or 1
    totals = [sum(own + children for own, children in run.cpu.values()) for run in fleet]
    rows.append("| **all** | " + " | ".join(f"**{total:.1f} s**" for total in totals) + " |")
    rows.append(
        f"| the machine's CPU in the run ({cores} cores × processed seen) | "
        + " | ".join(f"{cores * run.processed:.1f} s" for run in fleet)
        + " |"
    )
    return "\n".join(rows)


def latency_and_throughput(
    args: argparse.Namespace, workdir: Path, served, big: Path, small: Path
) -> tuple[list[LatencyRun], list[Burst]]:
    """Parts 1 and 2."""
    say(f"part 1: {args.runs} latency runs, 20 s 1080p source, one worker")
    with stack_with(workdir, 1) as stack:
        engine = sqlalchemy.create_engine(stack.database_url, poolclass=NullPool)
        session = PlatformClient.sign_up(stack.base_url, "bench").session
        runs = []
        for number in range(1, args.runs + 1):
            run = latency_run(stack, session, engine, big, served.url(big))
            say(
                f"  run {number}: end to end {run.end_to_end:.2f} s, ffmpeg alone "
                f"{run.ffmpeg_alone:.2f} s (in the run {run.ffmpeg_in_run:.2f} s), difference "
                f"{run.overhead:.2f} s (in the run {run.overhead_in_run:.2f} s); {load()}"
            )
            runs.append(run)
        engine.dispose()
        bursts: list[Burst] = []
        if not args.skip_throughput:
            say(f"part 2: {args.tasks} tasks at once, 10 s 640x360 source")
            bursts.append(burst(stack, served.url(small), args.tasks, 1))
            say(f"  1 worker: {bursts[-1].elapsed:.1f} s, {bursts[-1].per_minute:.1f} tasks/min; {load()}")
    if not args.skip_throughput:
        with stack_with(workdir, 2) as stack:
            bursts.append(burst(stack, served.url(small), args.tasks, 2))
            say(f"  2 workers: {bursts[-1].elapsed:.1f} s, {bursts[-1].per_minute:.1f} tasks/min; {load()}")
    return runs, bursts


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="latency runs (default 5)")
    parser.add_argument("--tasks", type=int, default=20, help="tasks per throughput burst (default 20)")
    parser.add_argument(
        "--budget", type=float, default=1.5, help="largest median difference allowed, seconds (default 1.5)"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument(
        "--only-progressive", action="store_true", help="run part 3 alone (parts across the fleet)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="part 3's rounds, each with 1 then 2 workers (default 1)"
    )
    args = parser.parse_args(argv)

    say(f"machine: {machine()}; {load()}")
    with scratch_media("idrl-bench-e2e-") as (workdir, media):
        say("making the sources ...")
        big = make_bench_source(media / "run-1080p-20s.mp4", 20, 1920, 1080)
        small = make_bench_source(media / "run-360p-10s.mp4", 10, 640, 360)
        runs: list[LatencyRun] = []
        bursts: list[Burst] = []
        with serve_folder(media) as served:
            if not args.only_progressive:
                runs, bursts = latency_and_throughput(args, workdir, served, big, small)
            say("part 3: parts across the fleet, 180 s 1080p source, 1 and 2 workers at one thread")
            long = make_bench_source(media / "run-1080p-180s.mp4", 180, 1920, 1080)
            fleet: list[Progressive] = []
            for round_, workers in itertools.product(range(1, args.rounds + 1), (1, 2)):
                with stack_with(workdir, workers, ONE_THREAD) as stack:
                    fleet.append(progressive_run(stack, round_, workers, served.url(long), big))
                run = fleet[-1]
                say(
                    f"  round {round_}, {workers} worker(s): first clip {run.clips_seen[0]:.1f} s, all {run.parts} clips "
                    f"{run.processed:.1f} s, split {run.split:.2f} s, one clip's ffmpeg alone "
                    f"{run.reference:.1f} s; {load()}"
                )

    say()
    say(fleet_table(fleet))
    say()
    say(cpu_table(fleet))
    if not runs:
        return 0
    say()
    say(latency_table(runs))
    if bursts:
        say()
        say(
            "| workers | tasks | first POST → last processed | tasks per minute | busy per task (median) "
            "| idle between tasks on a worker (median) |"
        )
        say("|---|---|---|---|---|---|")
        for result in bursts:
            say(
                f"| {result.workers} | {result.tasks} | {result.elapsed:.1f} s | {result.per_minute:.1f} | "
                f"{result.busy:.2f} s | {result.idle:.2f} s |"
            )
    say()
    within = True
    for what, field in (("to ffmpeg alone", "overhead"), ("to ffmpeg in the run", "overhead_in_run")):
        median = statistics.median(getattr(run, field) for run in runs)
        within = within and median < args.budget
        verdict = "within" if median < args.budget else "OVER"
        say(f"median difference {what}: {median:.2f} s, {verdict} the {args.budget:.1f} s budget")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
