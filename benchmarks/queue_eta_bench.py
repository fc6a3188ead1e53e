"""``make bench-queue``: how close the place-in-line estimates of ``GET /tasks/<id>``
(``queue.eta_seconds``, docs/queue.md) come to when the tasks are really processed.

    .venv/bin/python benchmarks/queue_eta_bench.py [--tasks 20] [--users 2]

``--tasks`` tasks are submitted at once by URL, shared round robin among ``--users``
users (each holds at most ``MAX_PARTS_IN_FLIGHT_PER_USER`` in flight, so the rest wait
held), to a fresh local stack with one worker and the default settings (but for a read
limit raised so the polling stays under it). The sources are 20, 25, 30, 35 and 40 s of
ffmpeg's ``testsrc`` at 640x360, in turn: one part for the 20 s source, two for the
others. Every second a client reads each unfinished task; each answer with a ``queue``
gives an estimate of the moment the task will be processed (the time of the answer plus
``eta_seconds``), or none (``eta_seconds`` null). The moment the task really became
processed is the notifier's commit of its ``processed`` status (``task_history``).

Printed: the median absolute error of the estimates, overall, for those given while
the task was queued or processing, and for those of the run's first and second halves
(early in the run the throughput is measured on few parts, and the mean size of a task
on few tasks), the median signed error (positive: the estimate was too late), and the
share of null estimates. The run takes about four minutes on 2 vCPUs and stops after
``RUN_TIMEOUT`` seconds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy
from sqlalchemy import select
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402
from e2e_bench import (  # noqa: E402
    HTTP_TIMEOUT,
    check_final,
    load,
    make_bench_source,
    scratch_media,
    stack_with,
    submit,
)

from infra.local.fileserver import serve_folder  # noqa: E402
from shared.tables import task_history  # noqa: E402
from tests.support.client import PlatformClient  # noqa: E402

SOURCE_SECONDS = (20, 25, 30, 35, 40)
POLL_SECONDS = 1.0
RUN_TIMEOUT = 480
# Two users polling ten tasks each every second read 600 times a minute, the default
# per-user limit: the benchmark raises it so the polling never meets a 429.
SETTINGS = {"reads_per_minute_per_user": "6000"}


@dataclass(frozen=True)
class Estimate:
    task_id: str
    seen_at: datetime  # when the answer came
    status: str  # queued or processing
    position: int
    eta_seconds: float | None

    @property
    def expected(self) -> datetime | None:
        return None if self.eta_seconds is None else self.seen_at + timedelta(seconds=self.eta_seconds)


def poll(clients: dict[str, PlatformClient], deadline: float) -> list[Estimate]:
    """Read every unfinished task once a second until all are processed."""
    estimates: list[Estimate] = []
    waiting = dict(clients)
    started = time.monotonic()
    rounds = 0
    while waiting:
        for task_id, client in list(waiting.items()):
            response = client.session.get(f"{client.base_url}/tasks/{task_id}", timeout=HTTP_TIMEOUT)
            if response.status_code != 200:
                raise SystemExit(f"GET /tasks/{task_id} answered {response.status_code}: {response.text}")
            seen_at = datetime.now(UTC)
            task = response.json()
            check_final(task)
            if task["status"] == "processed":
                del waiting[task_id]
            elif "queue" in task:
                place = task["queue"]
                estimates.append(
                    Estimate(task_id, seen_at, task["status"], place["position"], place["eta_seconds"])
                )
            else:
                raise SystemExit(f"a {task['status']} task without a queue: {task}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(waiting)} task(s) not processed after {RUN_TIMEOUT} s")
        rounds += 1
        time.sleep(max(0.0, started + rounds * POLL_SECONDS - time.monotonic()))
    return estimates


def processed_at(database_url: str, task_ids: Sequence[str]) -> dict[str, datetime]:
    """When the notifier committed each task's processed status."""
    query = select(task_history.c.task_id, task_history.c.recorded_at).where(
        task_history.c.task_id.in_(task_ids), task_history.c.status == "processed"
    )
    engine = sqlalchemy.create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {str(task_id): recorded for task_id, recorded in conn.execute(query)}
    finally:
        engine.dispose()


def errors(estimates: Sequence[Estimate], actual: dict[str, datetime]) -> list[float]:
    """Estimate minus actual, in seconds, of the estimates given (positive: too late)."""
    return [
        (estimate.expected - actual[estimate.task_id]).total_seconds()
        for estimate in estimates
        if estimate.expected is not None
    ]


def row(what: str, estimates: Sequence[Estimate], actual: dict[str, datetime]) -> str:
    signed = errors(estimates, actual)
    nulls = sum(estimate.eta_seconds is None for estimate in estimates)
    share = f"{100 * nulls / len(estimates):.0f} %" if estimates else "–"
    if not signed:
        return f"| {what} | {len(estimates)} | 0 | – | – | {share} |"
    absolute = statistics.median(abs(error) for error in signed)
    return (
        f"| {what} | {len(estimates)} | {len(signed)} | {absolute:.1f} s | "
        f"{statistics.median(signed):+.1f} s | {share} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20, help="tasks submitted at once (default 20)")
    parser.add_argument("--users", type=int, default=2, help="users they are shared among (default 2)")
    args = parser.parse_args(argv)

    say(f"machine: {machine()}; {load()}")
    with scratch_media("idrl-bench-queue-") as (workdir, media):
        say("making the sources ...")
        sources = [
            make_bench_source(media / f"run-{seconds}s.mp4", seconds, 640, 360) for seconds in SOURCE_SECONDS
        ]
        with serve_folder(media) as served, stack_with(workdir, 1, SETTINGS) as stack:
            users = [PlatformClient.sign_up(stack.base_url, "bench") for _ in range(args.users)]
            say(f"{args.tasks} tasks at once from {args.users} user(s), one worker")
            started = time.monotonic()

            def submitted(n: int) -> tuple[str, PlatformClient]:
                user = users[n % len(users)]
                return submit(user.session, stack.base_url, served.url(sources[n % len(sources)])), user

            with ThreadPoolExecutor(min(args.tasks, 10)) as pool:
                clients = dict(pool.map(submitted, range(args.tasks)))
            estimates = poll(clients, started + RUN_TIMEOUT)
            elapsed = time.monotonic() - started
            actual = processed_at(stack.database_url, list(clients))
        say(f"  all processed in {elapsed:.0f} s; {load()}")

    say()
    say("| estimates given | answers | with an ETA | median absolute error | median signed error | null |")
    say("|---|---|---|---|---|---|")
    say(row("all", estimates, actual))
    for status in ("queued", "processing"):
        say(row(f"while {status}", [estimate for estimate in estimates if estimate.status == status], actual))
    # The throughput and the mean are measured on more work as the run goes: the
    # estimates of its two halves apart.
    first, last = min(e.seen_at for e in estimates), max(e.seen_at for e in estimates)
    middle = first + (last - first) / 2
    say(row("first half of the run", [e for e in estimates if e.seen_at < middle], actual))
    say(row("second half of the run", [e for e in estimates if e.seen_at >= middle], actual))
    return 0


if __name__ == "__main__":
    sys.exit(main())
