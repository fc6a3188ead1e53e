"""The one event codec: what goes out comes back, and what cannot be read is named."""

import json
import uuid

import pytest

from shared.events import (
    ClipOutput,
    ClipSpec,
    MalformedEvent,
    PartSubmitted,
    TaskStatusChanged,
    TaskSubmitted,
    decode,
    encode,
)
from shared.lifecycle import TaskStatus


def test_task_submitted_round_trips_with_attributes():
    event = TaskSubmitted(
        task_id=uuid.uuid4(),
        owner_id=uuid.uuid4(),
        source="gs://uploads/x/source",
        spec=ClipSpec(fit="crop", mode="trim"),
    )
    data, attributes = encode(event)
    assert attributes == {
        "event_type": "TaskSubmitted",
        "event_id": event.event_id,
        "task_id": str(event.task_id),
        "schema_version": "1",
    }
    assert json.loads(data)["schema_version"] == 1
    assert decode(data, attributes) == event


def test_status_changed_round_trips_with_outputs():
    event = TaskStatusChanged(
        task_id=uuid.uuid4(),
        status=TaskStatus.PROCESSED,
        attempt=2,
        progress=100,
        outputs=(
            ClipOutput(index=0, uri="gs://c/tasks/t/part-00.mp4", duration_seconds=22.0, size_bytes=1234),
        ),
    )
    assert decode(*encode(event)) == event


def test_every_event_gets_its_own_id():
    task = uuid.uuid4()
    first = TaskStatusChanged(task_id=task, status="processing")
    second = TaskStatusChanged(task_id=task, status="processing")
    assert first.event_id != second.event_id


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\xff\xfe", "not JSON"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"event_type": "Unknown", "schema_version": 1}', "unknown event type"),
        (b'{"event_type": "TaskStatusChanged", "schema_version": 99}', "unsupported schema"),
        (b'{"event_type": "TaskStatusChanged", "schema_version": 1, "task_id": "nope"}', "invalid"),
    ],
)
def test_unreadable_messages_raise_malformed_event(data, reason):
    with pytest.raises(MalformedEvent, match=reason):
        decode(data, {})


def test_spec_refuses_odd_geometry_and_unknown_fits():
    with pytest.raises(ValueError):
        ClipSpec(width=1279)
    with pytest.raises(ValueError):
        ClipSpec(fit="stretch")


def _part(**changes):
    fields = {
        "task_id": uuid.uuid4(),
        "owner_id": uuid.uuid4(),
        "index": 2,
        "start": 20.0,
        "duration": 20.0,
        "seek_to": 21.4,
        "segment": "gs://clips/tasks/t/segments/part-02.mkv",
        "parts_total": 3,
        "spec": ClipSpec(formats=({"format": "9:16"},)),
    }
    return PartSubmitted(**{**fields, **changes})


@pytest.mark.parametrize("seek_to", [21.4, -0.021])  # a timeline may start before zero
def test_part_submitted_round_trips(seek_to):
    event = _part(seek_to=seek_to)
    data, attributes = encode(event)
    assert attributes["event_type"] == "PartSubmitted"
    assert decode(data, attributes) == event


@pytest.mark.parametrize(
    "changes",
    [{"index": 0}, {"index": 4}, {"parts_total": 0}, {"parts_total": 100_001, "index": 1}, {"duration": 0}],
)
def test_a_part_outside_its_plan_is_malformed(changes):
    data, attributes = encode(_part())
    body = {**json.loads(data), **changes}
    with pytest.raises(MalformedEvent, match="invalid PartSubmitted"):
        decode(json.dumps(body).encode(), attributes)
