"""``make bench-api``: the api's memory while it streams a large upload (multipart and
resumable), the resumable upload's throughput and resume time, and the time
``GET /tasks`` takes with a full table.

    .venv/bin/python benchmarks/api_bench.py [--upload-mb 500] [--calls 200]

Part 1, upload memory: a fresh local stack (auth, api with one gunicorn worker, the
gateway, PostgreSQL and the emulators; no transcoder, so nothing processes the file)
receives a ``--upload-mb`` MB video (a real MP4 head and padding) through the gateway as
a chunked multipart stream. The api worker's resident memory (psutil, sampled every
20 ms) is compared with its value after a small warm-up upload; the growth must stay
under 100 MB (exit status 1 if not).

Part 2, resumable upload: the same ``--upload-mb`` MB through the gateway with the tus
protocol (``/uploads``: one POST, then one PATCH streamed like the multipart body),
timed against Part 1's multipart upload of the same run (goal: at least 0.9 times its
throughput) with the same RSS sampling (growth under 100 MB). Then a 64 MB upload is cut
by the client halfway (the socket closed mid-body) and resumed: the time from the
client's HEAD to the next 256 KiB accepted (204) is the resume time (goal: at most 1 s).

Part 3, list latency: 10,000 tasks in the table, 1,000 of them the caller's; ``--calls``
in-process ``GET /tasks`` calls (Flask test client: routing, token check, query,
JSON) for the default page (20) and the largest (100). p95 of the default page must
stay under 20 ms (exit status 1 if not). The query's plan (EXPLAIN ANALYZE) shows the
index it uses.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psutil
import requests
import sqlalchemy
from sqlalchemy import Integer, Text, Uuid, cast, column, func, insert, literal, select, text, values
from sqlalchemy.dialects.postgresql import JSONB

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402

from infra.local import LocalStack, StackConfig, free_ports  # noqa: E402
from infra.local.process import RssSampler  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.tables import tasks, users  # noqa: E402
from shared.tokens import TokenVerifier, generate_signing_key_pem, issue_token, signing_key_from_pem  # noqa: E402
from tests.support.client import PlatformClient  # noqa: E402

MB = 1024 * 1024
RSS_BUDGET_MB = 100
P95_BUDGET_MS = 20
HTTP_TIMEOUT = 600
BOUNDARY = "idrl-bench-boundary"


def tiny_mp4(folder: Path) -> bytes:
    path = folder / "head.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x90:rate=10",
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
        timeout=60,
    )
    return path.read_bytes()


def multipart_stream(head: bytes, total_bytes: int) -> Iterator[bytes]:
    """A multipart body whose file is ``head`` padded to ``total_bytes``, generated as it
    is sent (the client never holds it either)."""
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="long-run.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()
    yield head
    block = os.urandom(MB)
    remaining = total_bytes - len(head)
    while remaining > 0:
        piece = block[: min(MB, remaining)]
        remaining -= len(piece)
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(base_url: str, headers: dict[str, str], head: bytes, size: int) -> tuple[dict, float]:
    started = time.monotonic()
    response = requests.post(
        f"{base_url}/tasks",
        data=multipart_stream(head, size),
        timeout=HTTP_TIMEOUT,
        headers=headers | {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    elapsed = time.monotonic() - started
    if response.status_code != 202:
        raise SystemExit(f"upload answered {response.status_code}: {response.text[:500]}")
    return response.json(), elapsed


def api_worker(stack: LocalStack) -> psutil.Process:
    [master] = [process for _, process in stack.processes if process.name == "api"]
    [worker] = psutil.Process(master.pid).children()
    return worker


def bench_upload(stack: LocalStack, workdir: Path, upload_mb: int) -> tuple[int, float]:
    say(f"\n== Part 1: a {upload_mb} MB upload through the gateway ==")
    head = tiny_mp4(workdir)
    base_url = stack.base_url
    headers = PlatformClient.sign_up(base_url, "bench", timeout=60).headers
    worker = api_worker(stack)
    # Warm-up: modules, clients and pools are loaded by a first small upload.
    upload(base_url, headers, head, 4 * MB)
    baseline = worker.memory_info().rss
    with RssSampler(worker) as sampler:
        task, elapsed = upload(base_url, headers, head, upload_mb * MB)
    from shared.storage import storage_client

    settings = Settings(**stack.settings_values)
    blob = storage_client().bucket(settings.uploads_bucket).blob(f"uploads/{task['id']}/source")
    blob.reload()
    if stack.dead():
        raise SystemExit("stack processes died during the upload")
    growth_mb = (sampler.peak - baseline) / MB
    say(f"  stored object:        {blob.size / MB:.1f} MB (uploads/{task['id']}/source)")
    say(
        f"  upload time:          {elapsed:.1f} s ({upload_mb / elapsed:.0f} MB/s, gateway -> api -> emulator)"
    )
    say(f"  api worker RSS:       {baseline / MB:.1f} MB before, {sampler.peak / MB:.1f} MB peak")
    say(f"  RSS growth:           {growth_mb:.1f} MB (budget < {RSS_BUDGET_MB} MB)")
    return (0 if blob.size == upload_mb * MB and growth_mb < RSS_BUDGET_MB else 1), elapsed


TUS = {"Tus-Resumable": "1.0.0"}
TUS_RATIO_GOAL = 0.9
RESUME_GOAL_SECONDS = 1.0


def padded_stream(head: bytes, total_bytes: int, start: int = 0) -> Iterator[bytes]:
    """``head`` padded to ``total_bytes`` with random bytes, from ``start`` on, generated as
    it is sent. The padding repeats one random MiB, so any slice can be produced again."""
    block = os.urandom(MB)
    data_at = start
    if data_at < len(head):
        yield head[data_at:]
        data_at = len(head)
    while data_at < total_bytes:
        offset = (data_at - len(head)) % MB
        piece = block[offset : offset + min(MB - offset, total_bytes - data_at)]
        data_at += len(piece)
        yield piece


def create_upload(base_url: str, headers: dict[str, str], size: int) -> str:
    response = requests.post(
        f"{base_url}/uploads", headers=headers | TUS | {"Upload-Length": str(size)}, timeout=60
    )
    if response.status_code != 201:
        raise SystemExit(f"POST /uploads answered {response.status_code}: {response.text[:500]}")
    return f"{base_url}{response.headers['Location']}"


def tus_upload(base_url: str, headers: dict[str, str], head: bytes, size: int) -> tuple[str, float]:
    started = time.monotonic()
    url = create_upload(base_url, headers, size)
    # Sent as it is generated (chunked), like the multipart body of Part 1.
    response = requests.patch(
        url,
        data=padded_stream(head, size),
        timeout=HTTP_TIMEOUT,
        headers=headers | TUS | {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
    )
    elapsed = time.monotonic() - started
    if response.status_code != 204 or int(response.headers["Upload-Offset"]) != size:
        raise SystemExit(f"PATCH answered {response.status_code}: {response.text[:500]}")
    return url, elapsed


def cut_halfway(url: str, headers: dict[str, str], head: bytes, size: int) -> None:
    """Send half the body of a PATCH for the whole file, then close the socket."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.putrequest("PATCH", parts.path)
    for name, value in (
        headers
        | TUS
        | {
            "Upload-Offset": "0",
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(size),
        }
    ).items():
        conn.putheader(name, value)
    conn.endheaders()
    sent = 0
    for piece in padded_stream(head, size):
        conn.send(piece)
        sent += len(piece)
        if sent >= size // 2:
            break
    time.sleep(1)  # the api has taken what was sent
    conn.sock.close()


def resume_time(base_url: str, headers: dict[str, str], head: bytes) -> tuple[float, int, int]:
    """Cut a 64 MB upload halfway, then time HEAD -> the next 256 KiB accepted. Returns
    the seconds, the offset resumed from, and the 409s met while the cut PATCH ended."""
    size = 64 * MB
    url = create_upload(base_url, headers, size)
    cut_halfway(url, headers, head, size)
    started = time.monotonic()
    conflicts = 0
    while True:
        offset = int(requests.head(url, headers=headers | TUS, timeout=60).headers["Upload-Offset"])
        piece = b"".join(padded_stream(head, offset + 256 * 1024, start=offset))
        response = requests.patch(
            url,
            data=piece,
            timeout=60,
            headers=headers
            | TUS
            | {"Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream"},
        )
        if response.status_code == 204:
            return time.monotonic() - started, offset, conflicts
        if response.status_code != 409:
            raise SystemExit(f"resuming PATCH answered {response.status_code}: {response.text[:500]}")
        conflicts += 1


def bench_tus(stack: LocalStack, workdir: Path, upload_mb: int, multipart_seconds: float) -> int:
    say(f"\n== Part 2: a {upload_mb} MB resumable (tus) upload through the gateway ==")
    head = (workdir / "head.mp4").read_bytes()  # made by Part 1
    base_url = stack.base_url
    headers = PlatformClient.sign_up(base_url, "bench", timeout=60).headers
    worker = api_worker(stack)
    tus_upload(base_url, headers, head, 4 * MB)  # warm-up
    baseline = worker.memory_info().rss
    with RssSampler(worker) as sampler:
        url, elapsed = tus_upload(base_url, headers, head, upload_mb * MB)
    from shared.storage import storage_client

    settings = Settings(**stack.settings_values)
    upload_id = url.rsplit("/", 1)[-1]
    blob = storage_client().bucket(settings.uploads_bucket).blob(f"uploads/{upload_id}/source")
    blob.reload()
    growth_mb = (sampler.peak - baseline) / MB
    ratio = multipart_seconds / elapsed
    say(f"  stored object:        {blob.size / MB:.1f} MB (uploads/{upload_id}/source)")
    say(f"  tus upload time:      {elapsed:.1f} s ({upload_mb / elapsed:.0f} MB/s)")
    say(
        f"  against multipart:    {multipart_seconds:.1f} s ({upload_mb / multipart_seconds:.0f} MB/s): "
        f"tus throughput {ratio:.2f}x (goal >= {TUS_RATIO_GOAL})"
    )
    say(f"  api worker RSS:       {baseline / MB:.1f} MB before, {sampler.peak / MB:.1f} MB peak")
    say(f"  RSS growth:           {growth_mb:.1f} MB (budget < {RSS_BUDGET_MB} MB)")
    seconds, offset, conflicts = resume_time(base_url, headers, head)
    say(
        f"  resume after a cut:   {seconds * 1000:.0f} ms from HEAD to the next 256 KiB accepted "
        f"(offset {offset / MB:.1f} MB of 64; {conflicts} x 409 while the cut PATCH ended; "
        f"goal <= {RESUME_GOAL_SECONDS:.0f} s)"
    )
    within = (
        blob.size == upload_mb * MB
        and growth_mb < RSS_BUDGET_MB
        and ratio >= TUS_RATIO_GOAL
        and seconds <= RESUME_GOAL_SECONDS
    )
    return 0 if within else 1


def bench_list(stack: LocalStack, calls: int) -> int:
    say(f"\n== Part 3: GET /tasks, 1,000 of 10,000 more tasks the caller's, {calls} in-process calls ==")
    settings = Settings(**stack.settings_values).model_copy(update={"outbox_relay_enabled": False})
    caller = fill_tasks(settings.database_url)

    from services.api import create_app

    key = signing_key_from_pem(generate_signing_key_pem())
    app = create_app(settings, token_verifier=TokenVerifier(settings, public_keys=[key.public_key]))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {issue_token(key, settings, str(caller))}"}
    status = 0
    for page in (20, 100):
        path = "/tasks" if page == 20 else f"/tasks?max={page}"
        for _ in range(10):  # warm the pool and the caches
            client.get(path, headers=headers)
        timings = []
        for _ in range(calls):
            started = time.perf_counter()
            response = client.get(path, headers=headers)
            timings.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200 or len(response.get_json()["tasks"]) != page:
                raise SystemExit(f"GET {path} answered {response.status_code}")
        timings.sort()
        p95 = timings[int(0.95 * len(timings)) - 1]
        say(
            f"  GET {path:<14} p50 {statistics.median(timings):5.2f} ms   p95 {p95:5.2f} ms   "
            f"max {timings[-1]:5.2f} ms" + (f"   (budget p95 < {P95_BUDGET_MS} ms)" if page == 20 else "")
        )
        if page == 20 and p95 >= P95_BUDGET_MS:
            status = 1
    app.extensions["engine"].dispose()
    plan = explain(settings.database_url, caller)
    say("  plan of the list query (newest first, 20 rows):")
    for line in plan:
        say(f"    {line}")
    if not any("tasks_owner_created_idx" in line for line in plan):
        say("  the list query does not use tasks_owner_created_idx")
        status = 1
    return status


def fill_tasks(database_url: str) -> uuid.UUID:
    """Ten users, 1,000 tasks each; returns the caller's id."""
    engine = sqlalchemy.create_engine(database_url)
    owners = [uuid.uuid4() for _ in range(10)]
    with engine.begin() as conn:
        conn.execute(
            insert(users),
            [
                {
                    "id": owner,
                    "username": f"u{owner.hex[:10]}",
                    "email": f"{owner.hex[:10]}@league.example",
                    "password_hash": "x",
                }
                for owner in owners
            ],
        )
        # Ten thousand rows in one statement, generated by the server: task n belongs to
        # owner n mod 10 and was created n seconds ago.
        series = func.generate_series(1, 10000).table_valued("n").render_derived(name="series")
        owner_numbers = values(
            column("number", Integer), column("owner_id", Uuid), name="owner_numbers"
        ).data(list(enumerate(owners)))
        conn.execute(
            insert(tasks).from_select(
                ["id", "owner_id", "source_kind", "source", "spec", "created_at"],
                select(
                    func.gen_random_uuid(),
                    owner_numbers.c.owner_id,
                    literal("url"),
                    "https://videos.league.example/run-" + cast(series.c.n, Text) + ".mp4",
                    literal({}, JSONB),
                    func.now() - series.c.n * literal(timedelta(seconds=1)),
                ).select_from(
                    series.join(owner_numbers, owner_numbers.c.number == func.mod(series.c.n, len(owners)))
                ),
            )
        )
        # Planner statistics for the new rows: a maintenance statement, not a query.
        conn.execute(text("ANALYZE tasks"))
        counts = conn.execute(
            select(func.count(), func.count().filter(tasks.c.owner_id == owners[0])).select_from(tasks)
        ).one()
    engine.dispose()
    say(f"  tasks in the table: {counts[0]}, the caller's: {counts[1]}")
    return owners[0]


def explain(database_url: str, caller: uuid.UUID) -> list[str]:
    from services.api.tasks import LIST_NEWEST_FIRST

    engine = sqlalchemy.create_engine(database_url)
    with engine.connect() as conn:
        # EXPLAIN wraps the service's own statement, compiled as the service runs it.
        compiled = LIST_NEWEST_FIRST.compile(dialect=conn.dialect)
        params = compiled.construct_params({"owner": caller, "limit": 20})
        args = tuple(params[name] for name in compiled.positiontup or ()) if compiled.positional else params
        rows = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + compiled.string, args).scalars().all()
    engine.dispose()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--upload-mb", type=int, default=500)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="idrl-bench-api-") as scratch:
        workdir = Path(scratch)
        state_dir = workdir / "stack"
        # Auth, the api with one gunicorn worker (the process measured) and the gateway; no
        # transcoder, so nothing processes the uploads.
        config = StackConfig(
            state_dir=state_dir,
            postgres_dir=state_dir / "pg",
            storage_in_memory=True,
            pubsub_emulator="pstest",
            services=["auth", "api"],
            gunicorn_workers=1,
            **free_ports(),
        )
        with LocalStack(config) as stack:
            # The client libraries of this process talk to the same emulators.
            os.environ["PUBSUB_EMULATOR_HOST"] = stack.pubsub_emulator_host or ""
            os.environ["STORAGE_EMULATOR_HOST"] = stack.storage_emulator_host or ""
            status, multipart_seconds = bench_upload(stack, workdir, args.upload_mb)
            status |= bench_tus(stack, workdir, args.upload_mb, multipart_seconds)
            status |= bench_list(stack, args.calls)
    say("\nresult: " + ("within budget" if status == 0 else "OVER BUDGET"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
