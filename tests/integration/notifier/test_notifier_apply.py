"""Applying status events against a real PostgreSQL: once, in order, all or nothing."""

from __future__ import annotations

import logging
import random
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from services.notifier.apply import Outcome
from shared import db, layout
from shared.events import ClipOutput, TaskStatusChanged
from shared.lifecycle import TaskStatus
from shared.tables import applied_events, outbox, task_parts
from tests.support.api import part_submitted
from tests.support.db import clip_rows, count_rows, history, part_attempts, task_row

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
RANK = {"queued": 0, "processing": 1, "processed": 2, "failed": 2, "canceled": 2}


def status_event(task_id, status, attempt=1, progress=0, seconds=0, **fields):
    return TaskStatusChanged(
        task_id=task_id,
        status=status,
        attempt=attempt,
        progress=progress,
        occurred_at=T0 + timedelta(seconds=seconds),
        **fields,
    )


def outputs(bucket, task_id, parts=2):
    return tuple(
        ClipOutput(
            index=i,
            uri=f"gs://{bucket}/{layout.clip_object(task_id, i)}",
            duration_seconds=22.0 if i < parts - 1 else 7.0,
            size_bytes=1000 + i,
        )
        for i in range(parts)
    )


def assert_only_moved_forward(lines):
    for before, after in zip(lines, lines[1:]):
        assert RANK[after.status] >= RANK[before.status], lines
        assert RANK[before.status] < 2, f"left a final status: {lines}"
        assert after.progress >= before.progress, lines


def test_a_run_is_recorded_with_its_clips_and_history(engine, settings, make_task, deliver):
    task_id = make_task()
    clips = outputs(settings.clips_bucket, task_id)
    for event in (
        status_event(task_id, TaskStatus.PROCESSING, worker_id="w-1", seconds=1),
        status_event(task_id, TaskStatus.PROCESSING, progress=40, worker_id="w-1", seconds=2),
        status_event(task_id, TaskStatus.PROCESSED, progress=100, worker_id="w-1", seconds=3, outputs=clips),
    ):
        assert deliver(event).outcome is Outcome.APPLIED

    row = task_row(engine, task_id)
    assert (row["status"], row["progress"], row["attempt"], row["worker_id"]) == ("processed", 100, 1, "w-1")
    assert row["status_changed_at"] == T0 + timedelta(seconds=3)
    assert [tuple(c.values()) for c in clip_rows(engine, task_id)] == [
        (c.index, c.uri, c.duration_seconds, c.size_bytes) for c in clips
    ]
    assert [(h.status, h.progress) for h in history(engine, task_id)] == [
        ("processing", 0),
        ("processing", 40),
        ("processed", 100),
    ]


def test_a_duplicate_changes_nothing(engine, make_task, deliver):
    task_id = make_task()
    event = status_event(task_id, TaskStatus.PROCESSING, progress=30)
    assert deliver(event).outcome is Outcome.APPLIED
    before = (task_row(engine, task_id), history(engine, task_id))

    assert deliver(event).outcome is Outcome.DUPLICATE
    assert (task_row(engine, task_id), history(engine, task_id)) == before


@pytest.mark.parametrize(
    "first, late",
    [
        (dict(status=TaskStatus.PROCESSING, progress=60), dict(status=TaskStatus.PROCESSING, progress=30)),
        (
            dict(status=TaskStatus.PROCESSING, attempt=2),
            dict(status=TaskStatus.PROCESSING, attempt=1, progress=90),
        ),
        (dict(status=TaskStatus.PROCESSING, progress=10), dict(status=TaskStatus.QUEUED, attempt=0)),
        (
            dict(status=TaskStatus.FAILED, failure_reason="no video stream"),
            dict(status=TaskStatus.PROCESSING, progress=50),
        ),
        (
            dict(status=TaskStatus.PROCESSING, attempt=3),
            dict(status=TaskStatus.FAILED, attempt=2, failure_reason="worker lost"),
        ),
    ],
)
def test_a_stale_event_changes_nothing(engine, make_task, deliver, first, late):
    task_id = make_task()
    assert deliver(status_event(task_id, **first)).outcome is Outcome.APPLIED
    before = (task_row(engine, task_id), history(engine, task_id))

    assert deliver(status_event(task_id, **late)).outcome is Outcome.STALE
    assert (task_row(engine, task_id), history(engine, task_id)) == before
    assert count_rows(engine, applied_events) == 2  # the stale one is recorded: its redelivery is a duplicate


def test_progress_only_rises_even_across_attempts(engine, make_task, deliver):
    task_id = make_task()
    deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=1, progress=70))
    assert (
        deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=2, progress=5)).outcome
        is Outcome.APPLIED
    )
    row = task_row(engine, task_id)
    assert (row["attempt"], row["progress"]) == (2, 70)
    deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=2, progress=85))
    assert task_row(engine, task_id)["progress"] == 85


def test_out_of_order_deliveries_end_in_the_same_state(engine, settings, make_task, deliver):
    rng = random.Random(5)
    for _ in range(6):
        task_id = make_task()
        clips = outputs(settings.clips_bucket, task_id, parts=3)
        run = [status_event(task_id, TaskStatus.PROCESSING, progress=p, seconds=p) for p in range(0, 100, 15)]
        run.append(status_event(task_id, TaskStatus.PROCESSED, progress=100, seconds=200, outputs=clips))
        rng.shuffle(run)
        for event in run + rng.sample(run, 3):  # some delivered twice
            deliver(event)

        row = task_row(engine, task_id)
        assert (row["status"], row["progress"]) == ("processed", 100)
        assert len(clip_rows(engine, task_id)) == 3
        lines = history(engine, task_id)
        assert_only_moved_forward(lines)
        assert len({line.event_id for line in lines}) == len(lines)


def test_concurrent_deliveries_apply_each_event_once(engine, settings, make_task, deliver):
    # Eight deliveries released at once per task, many tasks: without the row lock two
    # of them read the same progress and the lower one is written last.
    events_per_task = 8
    barrier = threading.Barrier(events_per_task)
    errors = []
    tasks = [make_task(status="processing", attempt=1) for _ in range(15)]

    def worker(index):
        try:
            for task_id in tasks:
                progress = 10 + (index * 37) % 90  # distinct values, no order
                if index == 0:
                    event = status_event(
                        task_id,
                        TaskStatus.PROCESSED,
                        progress=100,
                        outputs=outputs(settings.clips_bucket, task_id),
                    )
                else:
                    event = status_event(task_id, TaskStatus.PROCESSING, progress=progress)
                barrier.wait()
                deliver(event)
                deliver(event)  # and its redelivery
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            barrier.abort()
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(events_per_task)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert count_rows(engine, applied_events) == len(tasks) * events_per_task
    for task_id in tasks:
        row = task_row(engine, task_id)
        assert (row["status"], row["progress"]) == ("processed", 100)
        assert len(clip_rows(engine, task_id)) == 2
        lines = history(engine, task_id)
        assert_only_moved_forward(lines)
        assert len({line.event_id for line in lines}) == len(lines)


def test_processed_and_its_clips_commit_together_or_not_at_all(settings, make_task, deliver):
    # A notifier whose statements give up after 300 ms, while another session holds the
    # clips table: the clip insert fails after the row update was already sent.
    impatient = db.create_engine(settings.model_copy(update={"db_statement_timeout_ms": 300}))
    task_id = make_task(status="processing", attempt=1, progress=50)
    event = status_event(
        task_id, TaskStatus.PROCESSED, progress=100, outputs=outputs(settings.clips_bucket, task_id)
    )
    try:
        with impatient.connect() as blocker, blocker.begin():
            # Session settings and a table lock: SQL the Core tables do not build.
            blocker.execute(text("SET LOCAL statement_timeout = 0"))
            blocker.execute(text("LOCK TABLE clips IN ACCESS EXCLUSIVE MODE"))
            with pytest.raises(DBAPIError, match="statement timeout"):
                deliver(event, on=impatient)
        row = task_row(impatient, task_id)
        assert (row["status"], row["progress"]) == ("processing", 50)
        assert clip_rows(impatient, task_id) == [] and history(impatient, task_id) == []
        assert count_rows(impatient, applied_events) == 0  # so the redelivery is not taken for a duplicate

        assert deliver(event, on=impatient).outcome is Outcome.APPLIED
        assert task_row(impatient, task_id)["status"] == "processed"
        assert len(clip_rows(impatient, task_id)) == 2
    finally:
        impatient.dispose()


def test_a_later_processed_event_replaces_nothing_but_its_orphans(engine, settings, make_task, deliver):
    task_id = make_task()
    first = outputs(settings.clips_bucket, task_id)
    deliver(status_event(task_id, TaskStatus.PROCESSED, attempt=1, outputs=first))
    deleted = []
    second = outputs(settings.clips_bucket, task_id, parts=3)  # same names, plus one
    event = status_event(task_id, TaskStatus.PROCESSED, attempt=2, outputs=second)

    from services.notifier.apply import apply_status_change

    result = apply_status_change(
        engine, event, clips_bucket=settings.clips_bucket, delete_object=deleted.append
    )
    assert result.outcome is Outcome.STALE
    assert deleted == [second[2].uri]
    assert [c["uri"] for c in clip_rows(engine, task_id)] == [c.uri for c in first]


@pytest.mark.parametrize(
    "message, reason",
    [
        ({"data": "bm90IGpzb24=", "attributes": {"task_id": "abc"}}, "not JSON"),
        (
            {"data": "eyJldmVudF90eXBlIjogIlRhc2tTdGF0dXNDaGFuZ2VkIiwgInNjaGVtYV92ZXJzaW9uIjogMn0="},
            "unsupported schema version 2",
        ),
    ],
)
def test_a_malformed_message_is_logged_and_acknowledged(engine, deliver, caplog, message, reason):
    with caplog.at_level(logging.INFO, logger="services.notifier"):
        assert deliver(message) is None
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped")]
    assert len(dropped) == 1 and reason in dropped[0].getMessage()
    assert dropped[0].levelno == logging.ERROR
    assert count_rows(engine, applied_events) == 0


def test_an_event_for_an_unknown_task_is_logged_and_acknowledged(engine, deliver, caplog):
    stranger = uuid.uuid4()
    with caplog.at_level(logging.INFO, logger="services.notifier"):
        assert deliver(status_event(stranger, TaskStatus.PROCESSING)) is None
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped")]
    assert len(dropped) == 1 and f"no task {stranger}" in dropped[0].getMessage()
    assert dropped[0].task_id == str(stranger)
    assert count_rows(engine, applied_events) == 0


def test_an_unreachable_database_raises_so_pubsub_redelivers(settings, make_task, deliver):
    task_id = make_task()
    with socket_closed_port() as port:
        url = f"postgresql+pg8000://idrl:idrl@127.0.0.1:{port}/idrl"
        unreachable = db.create_engine(settings.model_copy(update={"database_url": url}))
        try:
            with pytest.raises(DBAPIError):
                deliver(status_event(task_id, TaskStatus.PROCESSING), on=unreachable)
        finally:
            unreachable.dispose()


class socket_closed_port:
    """A loopback port nothing listens on (bound, never listening, for the test's span)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()


@pytest.mark.parametrize("task_columns", [dict(status="canceled"), dict(status="processed", deleted_at=T0)])
def test_a_processed_event_for_a_canceled_or_deleted_task_leaves_no_orphans(
    engine, settings, make_task, deliver, caplog, task_columns
):
    from shared.storage import storage_client

    task_id = make_task(**task_columns)
    clips = outputs(settings.clips_bucket, task_id)
    foreign = ClipOutput(
        index=2, uri=f"gs://{settings.uploads_bucket}/{task_id}/source", duration_seconds=1.0, size_bytes=1
    )
    client = storage_client()
    for uri in [c.uri for c in clips] + [foreign.uri]:
        bucket, name = uri[len("gs://") :].split("/", 1)
        client.bucket(bucket).blob(name).upload_from_string(b"\0" * 16)

    event = status_event(task_id, TaskStatus.PROCESSED, outputs=(*clips, foreign))
    with caplog.at_level(logging.INFO, logger="services.notifier"):
        result = deliver(event)

    assert result.outcome is Outcome.STALE
    assert result.orphans_deleted == tuple(c.uri for c in clips)
    assert not any(client.bucket(settings.clips_bucket).list_blobs())
    assert [b.name for b in client.bucket(settings.uploads_bucket).list_blobs()] == [
        f"{task_id}/source"
    ]  # the notifier deletes only in the clips bucket
    assert clip_rows(engine, task_id) == [] and history(engine, task_id) == []
    lines = [r for r in caplog.records if r.getMessage().startswith("deleted the outputs")]
    assert len(lines) == 1 and lines[0].task_id == str(task_id)


def test_outputs_outside_the_tasks_folder_are_dropped_and_logged(
    engine, settings, make_task, deliver, caplog
):
    task_id, other = make_task(), make_task()
    own = ClipOutput(
        index=1,
        uri=f"gs://{settings.clips_bucket}/{layout.clip_object(task_id, 1)}",
        poster_uri=f"gs://{settings.clips_bucket}/{layout.poster_object(other, 1)}",
        duration_seconds=22.0,
        size_bytes=10,
    )
    foreign = [
        f"gs://{settings.clips_bucket}/{layout.clip_object(other, 1)}",  # another task's clip
        f"gs://{settings.uploads_bucket}/{layout.upload_object(other)}",  # another user's upload
        f"gs://{settings.clips_bucket}/{layout.task_folder(task_id)}../{other}/part-01.mp4",
        f"gs://{settings.clips_bucket}/elsewhere/part-01.mp4",
    ]
    event = status_event(
        task_id,
        TaskStatus.PROCESSED,
        progress=100,
        outputs=(
            own,
            *(
                ClipOutput(index=n, uri=uri, duration_seconds=1.0, size_bytes=1)
                for n, uri in enumerate(foreign, start=2)
            ),
        ),
    )
    with caplog.at_level(logging.INFO, logger="services.notifier"):
        assert deliver(event).outcome is Outcome.APPLIED

    assert task_row(engine, task_id)["status"] == "processed"
    rows = clip_rows(engine, task_id, "index", "uri", "poster_uri")
    assert [tuple(row.values()) for row in rows] == [(1, own.uri, None)]
    [line] = [r for r in caplog.records if r.getMessage().startswith("dropped outputs outside")]
    assert line.levelno == logging.ERROR and line.task_id == str(task_id)
    assert line.uris == [own.poster_uri, *foreign]


def test_a_late_event_naming_another_tasks_clips_deletes_none_of_them(engine, settings, make_task, deliver):
    from shared.storage import storage_client

    deleted_task, victim = make_task(status="canceled", deleted_at=T0), make_task(status="processed")
    bucket = storage_client().bucket(settings.clips_bucket)
    theirs = layout.clip_object(victim, 1)
    bucket.blob(theirs).upload_from_string(b"the victim's clip")
    event = status_event(
        deleted_task,
        TaskStatus.PROCESSED,
        progress=100,
        outputs=(
            ClipOutput(
                index=1, uri=f"gs://{settings.clips_bucket}/{theirs}", duration_seconds=1.0, size_bytes=1
            ),
        ),
    )

    result = deliver(event)

    assert result.outcome is Outcome.STALE and result.orphans_deleted == ()
    assert bucket.blob(theirs).exists()


def test_a_parts_events_count_its_own_attempts_and_leave_the_tasks(engine, settings, make_task, deliver):
    task_id = make_task()
    deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=1, seconds=1))
    for part, attempt, seconds in ((2, 1, 2), (3, 1, 3), (2, 2, 4), (2, 1, 5)):
        deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=attempt, part=part, seconds=seconds))
    # The highest attempt each part announced, a late lower one notwithstanding.
    assert part_attempts(engine, task_id) == {2: 2, 3: 1}
    # The task's attempt is the planning worker's.
    assert task_row(engine, task_id)["attempt"] == 1
    clip = outputs(settings.clips_bucket, task_id, parts=3)[2]
    made = status_event(
        task_id, TaskStatus.PROCESSING, attempt=2, part=2, progress=33, seconds=6, outputs=(clip,)
    )
    assert deliver(made).outcome is Outcome.APPLIED
    row = task_row(engine, task_id)
    assert (row["attempt"], row["progress"]) == (1, 33)
    assert [c["index"] for c in clip_rows(engine, task_id)] == [2]
    # A part's failure fails the task at the task's attempt.
    failed = status_event(
        task_id, TaskStatus.FAILED, attempt=3, part=3, seconds=7, failure_reason="part 3: gone"
    )
    assert deliver(failed).outcome is Outcome.APPLIED
    row = task_row(engine, task_id)
    assert (row["status"], row["attempt"], row["failure_reason"]) == ("failed", 1, "part 3: gone")
    assert part_attempts(engine, task_id) == {2: 2, 3: 3}


def test_a_part_out_of_range_is_dropped(engine, make_task, deliver, caplog):
    task_id = make_task()
    with caplog.at_level(logging.INFO, logger="services.notifier"):
        assert deliver(status_event(task_id, TaskStatus.PROCESSING, part=2**31)) is None
    dropped = [r for r in caplog.records if r.getMessage().startswith("dropped")]
    assert len(dropped) == 1 and f"part {2**31} is out of range" in dropped[0].getMessage()
    assert part_attempts(engine, task_id) == {}


def part_event(task_id, owner_id, index):
    return part_submitted("clips", task_id, owner_id, index, parts=2)


def _outbox_parts(engine, task_id) -> list[tuple[int, bool]]:
    """The task's PartSubmitted rows in the outbox, as (part, published)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.attributes["part"].astext, outbox.c.published_at.is_not(None)).where(
                outbox.c.attributes["event_type"].astext == "PartSubmitted",
                outbox.c.attributes["task_id"].astext == str(task_id),
            )
        ).all()
    return sorted((int(part), published) for part, published in rows)


def test_a_part_handed_out_is_recorded_held_once_and_written_to_the_outbox(
    engine, settings, make_task, owner_id, deliver
):
    task_id = make_task(status="processing", attempt=1)
    first = part_event(task_id, owner_id, 1)
    assert deliver(first).outcome is Outcome.APPLIED
    assert deliver(first).outcome is Outcome.DUPLICATE
    # The same part handed out again while it is held: nothing more to let out.
    again = part_event(task_id, owner_id, 1)
    assert deliver(again).outcome is Outcome.STALE
    assert part_attempts(engine, task_id) == {1: 0}
    assert _outbox_parts(engine, task_id) == [(1, False)]
    with engine.connect() as conn:
        dispatched = conn.execute(
            select(task_parts.c.dispatched_at, task_parts.c.made_at).where(task_parts.c.task_id == task_id)
        ).one()
    assert tuple(dispatched) == (None, None)


def test_a_part_of_an_ended_task_or_of_another_owner_is_not_handed_out(
    engine, make_task, owner_id, deliver, caplog
):
    ended = make_task(status="canceled", attempt=1)
    assert deliver(part_event(ended, owner_id, 1)).outcome is Outcome.STALE
    deleted = make_task(status="processing", attempt=1, deleted_at=T0)
    assert deliver(part_event(deleted, owner_id, 1)).outcome is Outcome.STALE
    other = make_task(status="processing", attempt=1)
    with caplog.at_level(logging.ERROR, logger="services.notifier"):
        assert deliver(part_event(other, uuid.uuid4(), 1)) is None
    assert "names an owner that is not its task's" in caplog.text
    for task_id in (ended, deleted, other):
        assert part_attempts(engine, task_id) == {}
        assert _outbox_parts(engine, task_id) == []


def _part_row(engine, task_id, index=1):
    with engine.connect() as conn:
        return conn.execute(
            select(task_parts.c.attempt, task_parts.c.dispatched_at, task_parts.c.made_at).where(
                task_parts.c.task_id == task_id, task_parts.c.index == index
            )
        ).one()


def test_a_part_made_in_place_is_let_out_and_started_at_once_and_never_written_to_the_outbox(
    engine, settings, make_task, owner_id, deliver
):
    # Its part handed out first, then its clips announced: the usual order.
    task_id = make_task(status="processing", attempt=1)
    in_place = part_event(task_id, owner_id, 1).model_copy(update={"in_place": True})
    assert deliver(in_place).outcome is Outcome.APPLIED
    row = _part_row(engine, task_id)
    assert row.attempt == 1 and row.dispatched_at is not None and row.made_at is None
    assert _outbox_parts(engine, task_id) == []
    clip = outputs(settings.clips_bucket, task_id, parts=2)[1]  # index 1
    deliver(status_event(task_id, TaskStatus.PROCESSING, attempt=1, seconds=2, outputs=(clip,)))
    assert _part_row(engine, task_id).made_at is not None

    # Its clips announced before its part was recorded: recorded made at once.
    early = make_task(status="processing", attempt=1)
    clip = outputs(settings.clips_bucket, early, parts=2)[1]
    deliver(status_event(early, TaskStatus.PROCESSING, attempt=1, seconds=2, outputs=(clip,)))
    late = part_event(early, owner_id, 1).model_copy(update={"in_place": True})
    assert deliver(late).outcome is Outcome.APPLIED
    row = _part_row(engine, early)
    assert row.dispatched_at is not None and row.made_at is not None
    assert _outbox_parts(engine, early) == []
    # A second part of the same plan is handed out as usual, held.
    assert deliver(part_event(early, owner_id, 2)).outcome is Outcome.APPLIED
    assert _outbox_parts(engine, early) == [(2, False)]

    # Its start announced before its part was recorded: the start recorded it let out,
    # and the part is still never written to the outbox (no second worker makes it).
    started = make_task(status="processing", attempt=1)
    deliver(status_event(started, TaskStatus.PROCESSING, attempt=1, part=1, seconds=2))
    in_place = part_event(started, owner_id, 1).model_copy(update={"in_place": True})
    assert deliver(in_place).outcome is Outcome.STALE
    row = _part_row(engine, started)
    assert row.attempt == 1 and row.dispatched_at is not None and row.made_at is None
    assert _outbox_parts(engine, started) == []
