"""``make bench-cancel``: how long a cancel takes to stop every part's ffmpeg of a task
made across the fleet, and what it leaves in the clips bucket.

    .venv/bin/python benchmarks/cancel_bench.py [--runs 3]

A fresh local stack with two workers (every ffmpeg run at one thread). Each run
submits a 60 s 1920x1080 source by URL (3 parts), waits until both workers' ffmpeg make
a part, sends ``DELETE /tasks/<id>`` and times, from the moment the request was sent, until
no ffmpeg runs under either worker (the answer's own time is shown beside it). Then it waits until both part workers logged the
cancellation and lists the objects left under the task's folder.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import psutil
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402
from e2e_bench import ONE_THREAD, load, make_bench_source, scratch_media, stack_with  # noqa: E402

from infra.local import LocalStack  # noqa: E402
from infra.local.fileserver import serve_folder  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.layout import task_folder  # noqa: E402
from tests.support.client import PlatformClient  # noqa: E402

WAIT_SECONDS = 120
POLL_SECONDS = 0.02


def ffmpeg_of(stack: LocalStack) -> list[psutil.Process]:
    """The ffmpeg runs under the stack's workers."""
    found = []
    for _, process in stack.processes:
        if not process.name.startswith("transcoder-"):
            continue
        try:
            children = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
        for child in children:
            try:
                if child.name() == "ffmpeg" and child.status() != psutil.STATUS_ZOMBIE:
                    found.append(child)
            except psutil.NoSuchProcess:
                continue
    return found


def wait(predicate, what: str):
    deadline = time.monotonic() + WAIT_SECONDS
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(POLL_SECONDS)
    return value


def canceled_lines(stack: LocalStack, task_id: str) -> int:
    lines = 0
    for log in stack.config.logs_dir.glob("transcoder-*.log"):
        text = log.read_text(errors="replace")
        lines += sum(
            1 for line in text.splitlines() if task_id in line and "canceled: ffmpeg stopped" in line
        )
    return lines


def objects_left(stack: LocalStack, task_id: str) -> list[str]:
    client = storage.Client(
        project="idrl-local",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": stack.storage_emulator_host},
    )
    bucket = stack.settings_values.get("clips_bucket") or Settings().clips_bucket
    return [blob.name for blob in client.list_blobs(bucket, prefix=task_folder(task_id))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    say(f"machine: {machine()}; {load()}")
    stops: list[float] = []
    left_counts: list[int] = []
    with scratch_media("idrl-bench-cancel-") as (workdir, media):
        say("making the source ...")
        source = make_bench_source(media / "run-1080p-60s.mp4", 60, 1920, 1080)
        with serve_folder(media) as served, stack_with(workdir, 2, ONE_THREAD) as stack:
            athlete = PlatformClient.sign_up(stack.base_url, "cancel")
            for run in range(1, args.runs + 1):
                task_id = athlete.submit_url(served.url(source))["id"]
                running = wait(lambda: len(found := ffmpeg_of(stack)) == 2 and found, "two parts' ffmpeg")
                sent_at = time.monotonic()
                answer = athlete.delete(f"/tasks/{task_id}")
                answered = time.monotonic() - sent_at
                if answer.status_code != 204:
                    raise SystemExit(f"DELETE answered {answer.status_code}: {answer.text}")
                wait(
                    lambda running=running: all(
                        not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
                        for process in running
                    ),
                    "every part's ffmpeg to stop",
                )
                stopped = time.monotonic() - sent_at
                wait(
                    lambda task_id=task_id: canceled_lines(stack, task_id) == 2,
                    "both part workers to log the cancellation",
                )
                left = objects_left(stack, task_id)
                stops.append(stopped)
                left_counts.append(len(left))
                say(
                    f"  run {run}: every part's ffmpeg stopped {stopped:.2f} s after the DELETE was sent "
                    f"(answered in {answered:.2f} s); "
                    f"objects left: {len(left)}; {load()}"
                )
                if left:
                    say(f"    left: {left}")
    say()
    say("| runs | every ffmpeg stopped after the DELETE was sent: median | max | objects left |")
    say("|---|---|---|---|")
    say(f"| {len(stops)} | {statistics.median(stops):.2f} s | {max(stops):.2f} s | {sum(left_counts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
