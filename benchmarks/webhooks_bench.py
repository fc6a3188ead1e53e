"""``make bench-webhooks``: how soon a status change reaches a webhook endpoint, and how
many deliveries one dispatcher sends per second.

    .venv/bin/python benchmarks/webhooks_bench.py [--events 200] [--deliveries 2000]

A fresh local stack runs PostgreSQL, the emulators and one dispatcher process (its
default settings: 16 deliveries at once, polling every 0.2 s when idle). A loopback
receiver in this process records when each delivery arrives.

Part 1, latency: ``--events`` status changes (a task moving to processing), one every
50 ms, each applied through the notifier's own code path (``apply_status_change``,
which writes the delivery row in its transaction); the time from the commit to the
receiver's answer, p50 and p95, against a receiver that answers at once. Goal: p95
under 1 s (exit status 1 if not).

Part 2, throughput: ``--deliveries`` deliveries written at once, to a receiver that
answers each after 50 ms; deliveries per second from the first arrival to the last.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy
from sqlalchemy import insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_report import machine, say  # noqa: E402

from infra.local import LocalStack, StackConfig, free_ports  # noqa: E402
from services.notifier.apply import apply_status_change  # noqa: E402
from shared import tables, webhooks  # noqa: E402
from shared.config import Settings  # noqa: E402
from shared.events import TaskStatusChanged  # noqa: E402
from shared.lifecycle import TaskStatus  # noqa: E402
from tests.support.webhooks import Answer, Receiver  # noqa: E402

P95_GOAL_S = 1.0


def _owner_with_endpoint(engine, settings: Settings, url: str) -> uuid.UUID:
    owner, endpoint = uuid.uuid4(), uuid.uuid4()
    box = webhooks.SecretBox(settings)
    with engine.begin() as conn:
        conn.execute(
            insert(tables.users).values(
                id=owner,
                username=f"bench-{owner.hex[:8]}",
                email=f"{owner.hex[:8]}@bench.example",
                password_hash="x",
            )
        )
        conn.execute(
            insert(tables.webhook_endpoints).values(
                id=endpoint,
                owner_id=owner,
                url=url,
                events=list(webhooks.EVENT_TYPES),
                secret=box.seal(webhooks.new_secret(), endpoint),
            )
        )
    return owner


def _tasks(engine, owner: uuid.UUID, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(tables.tasks),
            [
                {
                    "id": i,
                    "owner_id": owner,
                    "source_kind": "url",
                    "source": "https://v.example/a.mp4",
                    "spec": {},
                }
                for i in ids
            ],
        )
    return ids


def bench_latency(engine, settings: Settings, events: int) -> int:
    arrived: dict[str, float] = {}
    with Receiver(lambda n: Answer(204)) as receiver:
        owner = _owner_with_endpoint(engine, settings, receiver.url)
        task_ids = _tasks(engine, owner, events)
        committed: dict[str, float] = {}
        for task_id in task_ids:
            event = TaskStatusChanged(task_id=task_id, status=TaskStatus.PROCESSING, attempt=1)
            apply_status_change(engine, event, clips_bucket=settings.clips_bucket, public_base_url="")
            committed[str(task_id)] = time.monotonic()
            time.sleep(0.05)
        receiver.wait_for(lambda got: len(got) >= events, timeout=120)
        for r in receiver.received:
            arrived.setdefault(json.loads(r.body)["data"]["id"], r.at)
    latencies = sorted(arrived[t] - committed[t] for t in committed if t in arrived)
    if len(latencies) < events:
        say(f"  only {len(latencies)} of {events} deliveries arrived")
        return 1
    p50 = statistics.median(latencies)
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    say(f"latency, status change committed -> delivery received ({events} events, one every 50 ms):")
    say(
        f"  p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms (goal p95 < 1 s)"
    )
    return 0 if p95 < P95_GOAL_S else 1


def bench_throughput(engine, settings: Settings, deliveries: int) -> None:
    with Receiver(lambda n: Answer(204, delay=0.05)) as receiver:
        owner = _owner_with_endpoint(engine, settings, receiver.url)
        with engine.begin() as conn:
            endpoint = conn.execute(
                select(tables.webhook_endpoints.c.id).where(tables.webhook_endpoints.c.owner_id == owner)
            ).scalar_one()
            body = webhooks.event_body(webhooks.TEST_EVENT, {"bench": True})
            conn.execute(
                insert(tables.webhook_deliveries),
                [
                    {
                        "endpoint_id": endpoint,
                        "message_id": webhooks.new_message_id(),
                        "event_type": webhooks.TEST_EVENT,
                        "body": body,
                        "next_attempt_at": sqlalchemy.func.now(),
                    }
                    for _ in range(deliveries)
                ],
            )
        receiver.wait_for(lambda got: len(got) >= deliveries, timeout=600)
        times = [r.at for r in receiver.received]
    span = max(times) - min(times)
    say(f"throughput, one dispatcher, receiver answering in 50 ms ({len(times)} deliveries):")
    say(f"  {len(times) / span:.0f} deliveries/s over {span:.1f} s")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    say(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="idrl-bench-webhooks-") as scratch:
        state_dir = Path(scratch) / "stack"
        config = StackConfig(
            state_dir=state_dir,
            postgres_dir=state_dir / "pg",
            storage_in_memory=True,
            pubsub_emulator="pstest",
            services=["dispatcher"],
            **free_ports(),
        )
        with LocalStack(config) as stack:
            settings = Settings(**stack.settings_values)
            engine = sqlalchemy.create_engine(stack.database_url)
            try:
                status = bench_latency(engine, settings, args.events)
                bench_throughput(engine, settings, args.deliveries)
            finally:
                engine.dispose()
    say("\nresult: " + ("within the goal" if status == 0 else "OVER THE GOAL"))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
