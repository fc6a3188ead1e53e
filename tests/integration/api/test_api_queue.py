"""A queued or processing task's place in line and its ETA through ``GET /tasks/<id>``
(services/api/queue.py, docs/queue.md), against the rows the relay, the workers and the
notifier leave: dispatch times, statuses, part counts and clips made seconds ago.

The scene most tests share (``fleet``): Bob's three tasks dispatched and queued, one of
his tasks processing (4 parts, part 0 made in two formats), two processed in the last
two minutes (2 parts with no recorded plan, and 4 parts) and one processed 20 minutes ago
(outside the window). Their 7 distinct parts in the window were made 10 s apart
(``RECENT``): the fleet's throughput is 6 parts in the 60 s from the first to the last,
and a task whose size is not known counts the mean of the two recent ones, 3 parts.

Every ``made_at`` is counted from one reading of the database's clock (``start``), so
the spans between them are exact whenever the test runs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, func, insert, select, text, update

from services.api import queue
from shared.tables import clips, task_parts, tasks
from tests.support.api import insert_tasks, openapi_validator

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
# When the shared scene's parts in the window were made, seconds before ``start``, part 0
# first: the processed task with no recorded plan (2 parts), the processed one of 4, and
# the processing task's part 0.
UNPLANNED_MADE = (90, 80)
PLANNED_MADE = (70, 60, 50, 40)
PROCESSING_MADE = (30,)
RECENT = UNPLANNED_MADE + PLANNED_MADE + PROCESSING_MADE
MEAN = (len(UNPLANNED_MADE) + len(PLANNED_MADE)) / 2


def eta(parts: float, made: Sequence[float] = RECENT) -> float:
    """The ETA of ``parts`` to make when the distinct parts in the window were made
    ``made`` seconds before ``start``: the parts after the first over the seconds from the
    first to the last."""
    return round(parts * (max(made) - min(made)) / (len(made) - 1), 1)


def set_tasks(engine, task_ids, **values) -> None:
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id.in_(task_ids)).values(**values))


def dispatch(engine, task_ids, first: datetime = T0) -> None:
    """Let the tasks out as the relay does, one second apart in the order given."""
    with engine.begin() as conn:
        for n, task_id in enumerate(task_ids):
            conn.execute(
                update(tasks).where(tasks.c.id == task_id).values(dispatched_at=first + timedelta(seconds=n))
            )


@pytest.fixture
def start(engine) -> datetime:
    """The database's clock, read once: every clip's ``made_at`` is counted from it."""
    with engine.connect() as conn:
        return conn.execute(select(func.now())).scalar_one()


def add_clips(engine, task_id, *seconds_ago: float, start: datetime, formats=("16:9",)) -> None:
    """Clip rows as the notifier records them: part ``i`` made ``seconds_ago[i]`` before
    ``start``, one row per format (with the same ``made_at``)."""
    with engine.begin() as conn:
        conn.execute(
            insert(clips),
            [
                {
                    "task_id": task_id,
                    "index": index,
                    "format": clip_format,
                    "uri": f"gs://clips/tasks/{task_id}/clip-{index}-{clip_format.replace(':', 'x')}.mp4",
                    "duration_seconds": 22.0,
                    "size_bytes": 1000,
                    "made_at": start - timedelta(seconds=ago),
                }
                for index, ago in enumerate(seconds_ago)
                for clip_format in formats
            ],
        )


@dataclass(frozen=True)
class Fleet:
    queued: list[uuid.UUID]  # Bob's, dispatched at T0, T0+1 s, T0+2 s
    processing: uuid.UUID  # Bob's: 4 parts, 1 made (3 left)


@pytest.fixture
def fleet(engine, bob, start) -> Fleet:
    queued = insert_tasks(engine, bob.id, 3)
    dispatch(engine, queued)
    [processing, recent_unplanned, recent_planned, old] = insert_tasks(engine, bob.id, 4)
    dispatch(engine, [processing, recent_unplanned, recent_planned, old], first=T0 - timedelta(hours=1))
    set_tasks(engine, [processing], status="processing", clips_total=4)
    add_clips(engine, processing, *PROCESSING_MADE, start=start, formats=("16:9", "9:16"))
    set_tasks(engine, [recent_unplanned, recent_planned, old], status="processed", progress=100)
    set_tasks(engine, [recent_planned], clips_total=len(PLANNED_MADE))
    add_clips(engine, recent_unplanned, *UNPLANNED_MADE, start=start)
    add_clips(engine, recent_planned, *PLANNED_MADE, start=start)
    add_clips(engine, old, *[1200] * 6, start=start)
    return Fleet(queued, processing)


def read(client, user, task_id) -> dict:
    response = client.get(f"/tasks/{task_id}", headers=user.headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    openapi_validator("Task").validate(body)
    return body


# --- queued tasks ------------------------------------------------------------------------------


def test_a_queued_task_behind_another_users_tasks_counts_them_and_the_fleets_work(
    client, engine, alice, fleet
):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 + timedelta(seconds=10))

    body = read(client, alice, mine)

    # Behind Bob's 3 queued tasks (3 parts each, the mean), after the 3 parts left of his
    # processing task, and its own 3: 15 parts at 6 parts per 60 s.
    assert body["status"] == "queued"
    assert body["queue"] == {"position": 3, "eta_seconds": eta(3 + 3 * MEAN + MEAN)}


def test_the_first_task_in_line_waits_for_the_work_in_progress_and_its_own_parts(
    client, engine, alice, fleet
):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 - timedelta(seconds=10))
    set_tasks(engine, [mine], clips_total=2)

    assert read(client, alice, mine)["queue"] == {"position": 0, "eta_seconds": eta(3 + 2)}


def test_tasks_dispatched_at_the_same_moment_are_in_line_by_id(client, engine, alice, bob):
    both = insert_tasks(engine, alice.id, 2)
    set_tasks(engine, both, dispatched_at=T0)
    first, second = sorted(both)

    assert read(client, alice, first)["queue"]["position"] == 0
    assert read(client, alice, second)["queue"]["position"] == 1


def test_deleted_and_finished_tasks_are_not_in_line(client, engine, alice, bob, fleet):
    gone = insert_tasks(engine, bob.id, 3)
    dispatch(engine, gone, first=T0 - timedelta(minutes=5))
    set_tasks(engine, gone[:1], status="canceled", deleted_at=T0)
    set_tasks(engine, gone[1:2], status="failed")
    set_tasks(engine, gone[2:], deleted_at=T0)
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 + timedelta(seconds=10))

    assert read(client, alice, mine)["queue"]["position"] == 3


def test_a_held_task_is_behind_every_dispatched_task_and_its_owners_earlier_held_ones(
    client, engine, alice, make_user, fleet
):
    carol = make_user()
    # Carol's held task is older than Alice's: the relay may let it out first, but it is
    # not counted (docs/queue.md, the error of a held task's position).
    insert_tasks(engine, carol.id, 1, start=T0 - timedelta(days=1))
    held = insert_tasks(engine, alice.id, 3, start=T0)
    set_tasks(engine, held[:1], clips_total=5)  # a plan recorded before a redelivery

    body = read(client, alice, held[2])

    # Bob's 3 queued (the mean each), the 3 parts left of his processing task, Alice's
    # two earlier held tasks (5 known, one at the mean) and her own (the mean).
    assert body["queue"] == {"position": 3 + 2, "eta_seconds": eta(3 + 3 * MEAN + 5 + MEAN + MEAN)}
    assert read(client, alice, held[0])["queue"]["position"] == 3


# --- processing tasks ---------------------------------------------------------------------------------


def test_a_processing_task_is_at_position_0_and_waits_for_its_own_remaining_parts(
    client, engine, alice, fleet, start
):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 - timedelta(minutes=30))
    set_tasks(engine, [mine], status="processing", clips_total=5)
    mine_made = (20, 6)
    add_clips(engine, mine, *mine_made, start=start, formats=("16:9", "1:1"))

    body = read(client, alice, mine)

    # 5 parts, 2 made (in two formats each): 3 left. Its 2 parts count in the throughput,
    # and the last of them ends the span: 8 parts after the first in 84 s.
    assert body["queue"] == {"position": 0, "eta_seconds": eta(3, made=RECENT + mine_made)}


def test_a_processing_task_with_no_plan_and_nothing_made_counts_the_mean(client, engine, alice, fleet):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 - timedelta(minutes=30))
    set_tasks(engine, [mine], status="processing")

    assert read(client, alice, mine)["queue"] == {"position": 0, "eta_seconds": eta(MEAN)}


# --- statuses without a place -----------------------------------------------------------------------


@pytest.mark.parametrize("status", ["processed", "failed"])
def test_a_finished_task_has_no_queue_key(client, engine, alice, fleet, start, status):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 - timedelta(minutes=30))
    set_tasks(engine, [mine], status=status, clips_total=1)
    add_clips(engine, mine, 5, start=start)

    body = read(client, alice, mine)

    assert body["status"] == status and "queue" not in body


def test_a_task_just_submitted_has_a_place_once_read(client, engine, alice, fleet):
    response = client.post(
        "/tasks", json={"url": "https://videos.league.example/runs/run.mp4"}, headers=alice.headers
    )
    assert response.status_code == 202, response.get_data(as_text=True)

    body = read(client, alice, response.get_json()["id"])

    # Dispatched at once (now, after every one of Bob's): behind all three.
    assert body["queue"] == {"position": 3, "eta_seconds": eta(3 + 3 * MEAN + MEAN)}


# --- no basis, and nothing revealed ----------------------------------------------------------------------


def test_without_clips_made_in_the_last_ten_minutes_the_eta_is_null(client, engine, alice, bob, start):
    earlier = insert_tasks(engine, bob.id, 2)
    dispatch(engine, earlier)
    [done] = insert_tasks(engine, bob.id, 1)
    set_tasks(engine, [done], status="processed", clips_total=2, dispatched_at=T0 - timedelta(hours=1))
    add_clips(engine, done, 680, 660, start=start)
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 + timedelta(seconds=10))
    set_tasks(engine, [mine], clips_total=1)

    assert read(client, alice, mine)["queue"] == {"position": 2, "eta_seconds": None}


@pytest.mark.parametrize(
    "made, formats",
    [
        pytest.param((30,), ("16:9", "9:16"), id="one part, in two formats"),
        pytest.param((30, 30), ("16:9",), id="two parts recorded at one moment"),
    ],
)
def test_without_time_between_the_first_and_the_last_part_of_the_window_the_eta_is_null(
    client, engine, alice, bob, start, made, formats
):
    [running] = insert_tasks(engine, bob.id, 1)
    dispatch(engine, [running], first=T0 - timedelta(hours=1))
    set_tasks(engine, [running], status="processing", clips_total=3)
    add_clips(engine, running, *made, start=start, formats=formats)
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine])
    set_tasks(engine, [mine], clips_total=2)

    # Bob's task has made something, but no time is measured between the first part of the
    # window and the last: no throughput. The position stays.
    assert read(client, alice, mine)["queue"] == {"position": 0, "eta_seconds": None}


def test_with_throughput_but_no_processed_task_to_take_a_mean_from_the_eta_is_null(
    client, engine, alice, bob, start
):
    [running] = insert_tasks(engine, bob.id, 1)
    dispatch(engine, [running], first=T0 - timedelta(hours=1))
    set_tasks(engine, [running], status="processing", clips_total=3)
    running_made = (50, 20)
    add_clips(engine, running, *running_made, start=start)
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine])

    # Its own size is unknown and no task was processed in the window.
    assert read(client, alice, mine)["queue"] == {"position": 0, "eta_seconds": None}
    # Once its plan is known, the parts are all counted: 1 left of Bob's, 4 of its own.
    set_tasks(engine, [mine], clips_total=4)
    assert read(client, alice, mine)["queue"] == {"position": 0, "eta_seconds": eta(1 + 4, made=running_made)}


def test_other_users_tasks_count_in_the_position_but_are_never_shown(client, engine, alice, bob, fleet):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 + timedelta(seconds=10))

    response = client.get(f"/tasks/{mine}", headers=alice.headers)

    body = response.get_json()
    assert set(body["queue"]) == {"position", "eta_seconds"} and body["queue"]["position"] == 3
    answer = response.get_data(as_text=True)
    for task_id in [*fleet.queued, fleet.processing]:
        assert str(task_id) not in answer
    assert str(bob.id) not in answer
    # And Bob's tasks are still another user's: the same 404 as a missing one.
    missing = client.get(f"/tasks/{uuid.uuid4()}", headers=alice.headers)
    theirs = client.get(f"/tasks/{fleet.queued[0]}", headers=alice.headers)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.get_json() == missing.get_json()


# --- one snapshot, on indexes -----------------------------------------------------------------------------


def test_the_task_and_its_place_are_read_in_one_read_only_snapshot(client, engine, alice, fleet):
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0 + timedelta(seconds=10))
    transactions: list[list[str]] = []

    def on_begin(conn):
        transactions.append([])

    def on_statement(conn, cursor, statement, parameters, context, executemany):
        transactions[-1].append(statement)

    event.listen(engine, "begin", on_begin)
    event.listen(engine, "before_cursor_execute", on_statement)
    try:
        read(client, alice, mine)
    finally:
        event.remove(engine, "before_cursor_execute", on_statement)
        event.remove(engine, "begin", on_begin)

    [snapshot] = [statements for statements in transactions if any("made_at" in s for s in statements)]
    assert snapshot[0] == "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
    assert any("FROM tasks" in s and "tasks.owner_id =" in s for s in snapshot[1:3]), snapshot


# A platform a while in service: 20,000 tasks processed a day ago with 3 clips each (a
# table of clips far larger than its last ten minutes), 2,000 in flight or held.
_CROWD = [
    """
    INSERT INTO tasks (id, owner_id, status, source_kind, source, spec, created_at, dispatched_at, clips_total)
    SELECT gen_random_uuid(), :owner, 'processed', 'url', 'https://videos.league.example/r.mp4', '{}',
           now() - interval '1 day', now() - interval '1 day', 3
    FROM generate_series(1, 20000)
    """,
    """
    INSERT INTO clips (task_id, index, uri, duration_seconds, size_bytes, made_at)
    SELECT id, n, 'gs://clips/x', 22, 1000, now() - interval '1 day'
    FROM tasks, generate_series(0, 2) AS n
    WHERE status = 'processed' AND source = 'https://videos.league.example/r.mp4'
    """,
    """
    INSERT INTO tasks (id, owner_id, status, source_kind, source, spec, created_at, dispatched_at)
    SELECT gen_random_uuid(), :owner, CASE WHEN mod(n, 10) = 0 THEN 'processing' ELSE 'queued' END, 'url',
           'https://videos.league.example/r.mp4', '{}', now() - n * interval '1 second',
           CASE WHEN mod(n, 4) = 0 THEN NULL ELSE now() - n * interval '1 second' END
    FROM generate_series(1, 2000) AS n
    """,
    "ANALYZE tasks",
    "ANALYZE clips",
]
_SCAN_NODES = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


@pytest.fixture
def crowd(engine, bob, fleet) -> None:
    with engine.begin() as conn:
        for statement in _CROWD:
            conn.execute(text(statement), {"owner": bob.id} if ":owner" in statement else {})


def _scans(node: dict) -> list[dict]:
    found = [node] if node["Node Type"] == "Seq Scan" or node["Node Type"] in _SCAN_NODES else []
    for child in node.get("Plans", []):
        found += _scans(child)
    return found


def _plan(conn, query, params) -> dict:
    """PostgreSQL's plan of the service's own statement, sent as the service sends it."""

    def explained(conn, cursor, statement, parameters, context, executemany):
        return "EXPLAIN (FORMAT JSON) " + statement, parameters

    event.listen(conn, "before_cursor_execute", explained, retval=True)
    try:
        plan = conn.execute(query, params).scalar_one()
    finally:
        event.remove(conn, "before_cursor_execute", explained)
    [root] = json.loads(plan) if isinstance(plan, str) else plan
    return root["Plan"]


# Partial indexes of the tasks in flight (or held): read whole, they are as large as the
# work waiting, whatever the size of the table. Any other index is read by a condition.
_IN_FLIGHT_INDEXES = {
    "tasks_owner_in_flight_idx",
    "tasks_dispatched_line_idx",
    "tasks_held_idx",
    "task_parts_in_flight_idx",
    "task_parts_held_idx",
}


@pytest.mark.parametrize(
    "name, params, indexes",
    [
        ("_PARTS_MADE", {"window": queue.WINDOW}, {"clips_made_at_idx"}),
        ("_PROCESSED", {"window": queue.WINDOW}, {"clips_made_at_idx", "tasks_pkey", "clips_pkey"}),
        ("_IN_PROGRESS", {}, {"clips_pkey"}),
        ("_ALL_DISPATCHED", {}, set()),
        ("_DISPATCHED_BEFORE", {"dispatched_at": T0, "id": uuid.uuid4()}, {"tasks_dispatched_line_idx"}),
        ("_HELD_BEFORE", {"owner": uuid.uuid4(), "created_at": T0, "id": uuid.uuid4()}, {"tasks_held_idx"}),
        ("_ALL_PARTS_WAITING", {}, set()),
        ("_PARTS_WAITING_BEFORE", {"dispatched_at": T0}, set()),
        ("_OWN_HELD_PARTS", {"owner": uuid.uuid4()}, set()),
    ],
)
def test_every_query_of_the_place_reads_indexes_never_a_whole_table(engine, crowd, name, params, indexes):
    with engine.connect() as conn:
        plan = _plan(conn, getattr(queue, name), params)
    scans = _scans(plan)
    assert scans and all(scan["Node Type"] in _SCAN_NODES for scan in scans), json.dumps(plan)
    assert all("Index Cond" in scan or scan["Index Name"] in _IN_FLIGHT_INDEXES for scan in scans), (
        json.dumps(plan)
    )
    assert indexes <= {scan["Index Name"] for scan in scans}, json.dumps(plan)


# --- parts ---------------------------------------------------------------------------------


def test_parts_let_out_and_not_started_are_in_line_and_held_parts_go_before_their_owners_tasks(
    client, engine, alice, bob
):
    [planned] = insert_tasks(engine, bob.id, 1)
    dispatch(engine, [planned], first=T0 - timedelta(minutes=5))
    set_tasks(engine, [planned], status="processing", clips_total=4)
    # Bob's task's parts: 1 started, 2 let out before Alice's task and not started, 3 held,
    # 4 let out after Alice's task.
    parts = {1: (T0 - timedelta(minutes=4), 1), 2: (T0 - timedelta(minutes=4), 0), 3: (None, 0)}
    parts[4] = (T0 + timedelta(minutes=1), 0)
    with engine.begin() as conn:
        conn.execute(
            insert(task_parts),
            [
                {"task_id": planned, "index": index, "attempt": attempt, "dispatched_at": dispatched_at}
                for index, (dispatched_at, attempt) in parts.items()
            ],
        )
    [mine] = insert_tasks(engine, alice.id, 1)
    dispatch(engine, [mine], first=T0)
    [alices_held] = insert_tasks(engine, alice.id, 1, start=T0 + timedelta(hours=1))
    [bobs_held] = insert_tasks(engine, bob.id, 1, start=T0 + timedelta(hours=1))

    # Part 2 only: part 1 is being made, part 4 was let out after it.
    assert read(client, alice, mine)["queue"]["position"] == 1
    # Held: Alice's dispatched task, parts 2 and 4; and Bob's own held part 3 before his task.
    assert read(client, alice, alices_held)["queue"]["position"] == 3
    assert read(client, bob, bobs_held)["queue"]["position"] == 4
