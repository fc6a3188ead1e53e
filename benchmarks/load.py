"""``make load``: the Locust scenario against a fresh local stack, twice, reported in docs/.

Run 1 stops the transcoder workers so ffmpeg does not take the cores from the HTTP
services; run 2 keeps one worker running, as a real deployment would. Each run: 50 users,
20 s ramp, then 2 minutes measured (statistics reset when the ramp ends). The figures replace
the measured part of docs/load.md (a table per run, between its ``load results`` markers;
the hand-written tuning notes after them stay) and docs/load.png (requests per second and
p95 over time).

    .venv/bin/python benchmarks/load.py [--users 50] [--ramp 20] [--minutes 2]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from infra.local import LocalStack, StackConfig  # noqa: E402
from infra.local.fileserver import serve_folder  # noqa: E402
from infra.local.process import tree_rss  # noqa: E402
from tests.support.media import make_source  # noqa: E402

READ_TARGET_MS = 100
POST_TARGET_MS = 200
ENDPOINTS = ("GET /tasks", "GET /tasks/<id>", "POST /auth/login", "POST /tasks", "POST /auth/signup")


@dataclass(frozen=True)
class Run:
    name: str
    services: tuple[str, ...]
    transcoder_workers: int


RUNS = (
    Run("reads, transcoder workers stopped", ("auth", "api", "notifier"), 0),
    Run("transcoder worker running", ("auth", "api", "transcoder", "notifier"), 1),
)


def run_locust(base_url: str, source_url: str, prefix: Path, users: int, ramp: int, seconds: int) -> None:
    env = dict(os.environ, LOAD_SOURCE_URL=source_url)
    subprocess.run(
        [
            str(ROOT / ".venv/bin/locust"),
            "-f",
            str(ROOT / "tests/load/locustfile.py"),
            "--headless",
            "--host",
            base_url,
            "-u",
            str(users),
            "-r",
            str(users / ramp),
            "-t",
            f"{ramp + seconds}s",
            "--reset-stats",
            "--csv",
            str(prefix),
            "--csv-full-history",
            "--only-summary",
            "--loglevel",
            "WARNING",
        ],
        env=env,
        check=False,
        cwd=ROOT,
    )


def read_stats(prefix: Path) -> dict[str, dict[str, str]]:
    with open(f"{prefix}_stats.csv", newline="") as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


def read_history(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["Name"] == "Aggregated"]


def service_rss_mb(stack: LocalStack) -> dict[str, float]:
    """Resident memory of each service (its process tree), in MB."""
    sizes = {}
    for _, process in stack.processes:
        try:
            sizes[process.name] = tree_rss(psutil.Process(process.pid)) / 1e6
        except psutil.NoSuchProcess:
            continue
    return sizes


def table(stats: dict[str, dict[str, str]]) -> list[str]:
    lines = [
        "| endpoint | requests | failures | req/s | p50 ms | p95 ms | p99 ms | target p95 | met |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name in (*ENDPOINTS, "Aggregated"):
        row = stats.get(name)
        if row is None:
            continue
        target = (
            POST_TARGET_MS if name == "POST /tasks" else READ_TARGET_MS if name.startswith("GET") else None
        )
        p95 = float(row["95%"])
        met = "" if target is None else ("yes" if p95 < target and row["Failure Count"] == "0" else "no")
        lines.append(
            f"| {name} | {row['Request Count']} | {row['Failure Count']} | {float(row['Requests/s']):.1f} "
            f"| {row['50%']} | {row['95%']} | {row['99%']} | {target or '–'} | {met} |"
        )
    return lines


def chart(histories: dict[str, list[dict[str, str]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rps_axis, p95_axis) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for name, rows in histories.items():
        start = int(rows[0]["Timestamp"]) if rows else 0
        seconds = [int(row["Timestamp"]) - start for row in rows]
        rps_axis.plot(seconds, [float(row["Requests/s"]) for row in rows], label=name)
        p95_axis.plot(seconds, [float(row["95%"]) if row["95%"] != "N/A" else 0 for row in rows], label=name)
    rps_axis.set_ylabel("requests/s")
    p95_axis.set_ylabel("p95 ms (all endpoints)")
    p95_axis.set_xlabel("seconds since start (ramp 20 s, then 2 min measured)")
    rps_axis.legend(loc="lower right")
    rps_axis.set_title("Locust: 50 users through the gateway")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


RESULTS_START, RESULTS_END = "<!-- load results -->", "<!-- /load results -->"


def write_results(path: Path, results: str) -> None:
    """Put ``results`` between the markers of ``path``, keeping the text around them
    (a new file gets a title and the markers)."""
    text = path.read_text() if path.exists() else f"# Load\n\n{RESULTS_START}\n{RESULTS_END}\n"
    if RESULTS_START not in text or RESULTS_END not in text:
        raise SystemExit(f"{path} has no {RESULTS_START} ... {RESULTS_END} section to replace")
    before, rest = text.split(RESULTS_START, 1)
    after = rest.split(RESULTS_END, 1)[1]
    path.write_text(f"{before}{RESULTS_START}\n{results.strip()}\n{RESULTS_END}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--ramp", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    seconds = int(args.minutes * 60)

    base = StackConfig.from_environment()
    base = replace(
        base,
        state_dir=ROOT / ".local" / "load",
        settings={"signups_per_minute_per_client": "100000", "tasks_per_minute_per_user": "1000"},
    )
    results, histories = [], {}
    with tempfile.TemporaryDirectory(prefix="idrl-load-") as scratch:
        scratch_dir = Path(scratch)
        with serve_folder(scratch_dir) as served:
            # A 2 s 320x240 video with sound, the file every submission points at (x264's
            # default keyframe interval, 250).
            source_url = served.url(make_source(scratch_dir / "source.mp4", seconds=2, keyframe_every=250))
            for run in RUNS:
                config = replace(base, services=list(run.services), transcoder_workers=run.transcoder_workers)
                print(f"== {run.name}: starting a fresh stack", flush=True)
                with LocalStack(config, report=print) as stack:
                    prefix = scratch_dir / run.name.split(",")[0].replace(" ", "-")
                    print(
                        f"== {run.name}: {args.users} users, {args.ramp} s ramp, {seconds} s measured",
                        flush=True,
                    )
                    run_locust(stack.base_url, source_url, prefix, args.users, args.ramp, seconds)
                    rss = service_rss_mb(stack)
                stats = read_stats(prefix)
                histories[run.name] = read_history(prefix)
                results.append((run, stats, rss))
                print("\n".join(table(stats)), flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    chart(histories, args.out / "load.png")
    report = [
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `make load` (`benchmarks/load.py`) on "
        f"{platform.machine()}, {psutil.cpu_count()} vCPU, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        "with Locust on the same machine (it takes part of the same two cores).",
        "",
        f"Scenario (`tests/load/locustfile.py`, same as `tests/load/video-tasks.jmx`): {args.users} users, "
        f"{args.ramp} s ramp, then {seconds} s measured (statistics reset at the end of the ramp); "
        "70 % reads (`GET /tasks`, `GET /tasks/<id>`), 20 % logins, 10 % `POST /tasks` by URL of a 2 s "
        "video served on loopback; think time 0.5–1.5 s. Targets: no errors, p95 < 100 ms for reads, "
        "< 200 ms for `POST /tasks`.",
        "",
        f"Gunicorn: {base.gunicorn_workers} workers × {base.gunicorn_threads} threads (gthread) for auth "
        "and for api, behind nginx.",
        "",
    ]
    for run, stats, rss in results:
        report += [
            f"## {run.name}",
            "",
            *table(stats),
            "",
            "Service memory at the end (RSS of each process tree): "
            + ", ".join(f"{name} {size:.0f} MB" for name, size in sorted(rss.items())),
            "",
        ]
    report += ["![requests per second and p95 over time](load.png)"]
    write_results(args.out / "load.md", "\n".join(report))
    print(f"wrote {args.out / 'load.md'} and {args.out / 'load.png'}")


if __name__ == "__main__":
    main()
