"""The place-in-line estimate as a pure function (services/api/queue.py, docs/queue.md):
positions, the ETA from the fleet's throughput while it worked, the mean for parts not
planned yet, no ETA without a basis, and its rounding."""

from __future__ import annotations

import pytest

from services.api.queue import Ahead, Line, Parts, Place, RecentWork, estimate

# 7 parts made, the first and the last 60 s apart: 6 parts after the first in 60 s, 10 s a
# part. 30 tasks processed with 60 parts: 2 parts a task.
STEADY = RecentWork(parts_made=7, span_seconds=60.0, tasks_processed=30, parts_of_processed=60)
# Parts made (2 s a part) but no task processed: no mean to take.
UNPROCESSED = RecentWork(parts_made=5, span_seconds=8.0, tasks_processed=0, parts_of_processed=0)


def queued(*ahead: Ahead, own: Parts = Parts(2), in_progress=(), recent=STEADY) -> Line:
    return Line(processing=False, own=own, recent=recent, ahead=ahead, in_progress=in_progress)


# --- positions ---------------------------------------------------------------------------------


def test_a_queued_task_counts_every_unit_ahead_of_it():
    line = queued(Ahead(units=3, known_parts=0, unknown=3), Ahead(units=2, known_parts=0, unknown=2))
    assert estimate(line).position == 5


def test_a_queued_task_first_in_line_is_at_position_0():
    assert estimate(queued(Ahead(0, 0, 0))).position == 0


def test_a_processing_task_is_at_position_0_whatever_is_queued():
    line = Line(processing=True, own=Parts(3, made=1), recent=STEADY, ahead=(Ahead(7, 0, 7),))
    assert estimate(line).position == 0


# --- the ETA ---------------------------------------------------------------------------------------


def test_the_eta_is_the_parts_before_completion_over_the_throughput():
    # 1 left of a processing task (3, 2 made) + 4 parts ahead + 2 own = 7 parts: 70 s.
    line = queued(Ahead(units=2, known_parts=4, unknown=0), in_progress=(Parts(3, made=2),))
    assert estimate(line) == Place(position=2, eta_seconds=70.0)


def test_a_processing_task_waits_only_for_its_own_remaining_parts():
    line = Line(
        processing=True, own=Parts(5, made=2), recent=STEADY, ahead=(Ahead(9, 9, 0),), in_progress=(Parts(4),)
    )
    assert estimate(line) == Place(position=0, eta_seconds=30.0)


def test_a_processing_task_with_every_part_made_is_due_now():
    line = Line(processing=True, own=Parts(2, made=2), recent=STEADY)
    assert estimate(line).eta_seconds == 0.0


def test_parts_made_in_several_formats_do_not_make_a_task_finish_earlier():
    # made counts distinct parts; a task that made more than its plan never goes negative.
    line = Line(processing=True, own=Parts(2, made=5), recent=STEADY)
    assert estimate(line).eta_seconds == 0.0


def test_the_throughput_is_the_parts_after_the_first_over_the_time_from_the_first_to_the_last():
    # 3 parts, 24 s from the first to the last: 2 made in 24 s, 12 s a part. 3 left: 36 s.
    # (3 parts over 24 s would give 24.0, 3 parts over the window 600.0.)
    recent = RecentWork(parts_made=3, span_seconds=24.0, tasks_processed=1, parts_of_processed=1)
    line = Line(processing=True, own=Parts(4, made=1), recent=recent)
    assert estimate(line).eta_seconds == 36.0


def test_two_parts_are_enough_for_a_throughput():
    recent = RecentWork(parts_made=2, span_seconds=45.0, tasks_processed=0, parts_of_processed=0)
    line = Line(processing=True, own=Parts(2), recent=recent)
    assert estimate(line).eta_seconds == 90.0


# --- the mean for a task not planned yet -----------------------------------------------------------


def test_tasks_not_planned_yet_count_the_mean_of_the_tasks_processed_recently():
    # 10 s a part; 4 tasks processed with 10 parts: 2.5 parts a task.
    recent = RecentWork(parts_made=7, span_seconds=60.0, tasks_processed=4, parts_of_processed=10)
    # 1 known + 2 unknown ahead (5) + an unplanned processing task (2.5) + own unplanned (2.5) = 11.
    line = queued(
        Ahead(units=3, known_parts=1, unknown=2), own=Parts(None), in_progress=(Parts(None),), recent=recent
    )
    assert estimate(line) == Place(position=3, eta_seconds=110.0)


def test_an_unplanned_processing_task_with_parts_made_counts_the_rest_of_the_mean():
    # 10 s a part; 2 tasks processed with 8 parts: 4 parts a task, 3 left after the one made.
    recent = RecentWork(parts_made=7, span_seconds=60.0, tasks_processed=2, parts_of_processed=8)
    line = Line(processing=True, own=Parts(None, made=1), recent=recent)
    assert estimate(line).eta_seconds == 30.0


def test_the_mean_is_not_needed_when_every_count_is_known():
    recent = RecentWork(parts_made=7, span_seconds=60.0, tasks_processed=0, parts_of_processed=0)
    line = queued(Ahead(1, 3, 0), in_progress=(Parts(2),), recent=recent)
    assert estimate(line).eta_seconds == 70.0


# --- no basis: no ETA --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(
            queued(Ahead(1, 1, 0), recent=RecentWork(0, 0.0, 0, 0)), id="nothing made in the window"
        ),
        pytest.param(
            Line(processing=True, own=Parts(3), recent=RecentWork(0, 0.0, 0, 0)),
            id="processing, nothing made",
        ),
        # One part made: its work began at a moment no row records, so there is no time to
        # divide by. The database's span for it is 0; the count alone must also say so.
        pytest.param(queued(Ahead(1, 1, 0), recent=RecentWork(1, 0.0, 1, 1)), id="one part made"),
        pytest.param(
            Line(processing=True, own=Parts(3), recent=RecentWork(1, 30.0, 1, 1)),
            id="one part, whatever the span",
        ),
        pytest.param(
            Line(processing=True, own=Parts(3), recent=RecentWork(4, 0.0, 2, 4)),
            id="parts made, the first and the last at one moment",
        ),
        pytest.param(queued(Ahead(0, 0, 0), own=Parts(None), recent=UNPROCESSED), id="own size unknown"),
        pytest.param(queued(Ahead(2, 1, 1), recent=UNPROCESSED), id="a task ahead of unknown size"),
        pytest.param(
            queued(Ahead(0, 0, 0), in_progress=(Parts(None),), recent=UNPROCESSED),
            id="a processing task of unknown size",
        ),
        pytest.param(
            Line(processing=True, own=Parts(None), recent=UNPROCESSED), id="processing, size unknown"
        ),
    ],
)
def test_without_a_basis_there_is_no_eta_but_still_a_position(line):
    place = estimate(line)
    assert place.eta_seconds is None
    assert place.position == (0 if line.processing else sum(group.units for group in line.ahead))


# --- rounding -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "parts_made, span, own, eta",
    [
        (8, 600.0, 1, 85.7),  # 600 / 7 = 85.714...
        (10, 600.0, 2, 133.3),  # 1200 / 9 = 133.33...
        (6001, 600.0, 1, 0.1),  # 0.1 exactly
        (48001, 600.0, 1, 0.0),  # 0.0125: under a tenth
        (4, 0.5, 1, 0.2),  # 0.1666...: a span under a second
    ],
)
def test_the_eta_is_rounded_to_a_tenth_of_a_second(parts_made, span, own, eta):
    line = Line(processing=True, own=Parts(own), recent=RecentWork(parts_made, span, 1, 1))
    assert estimate(line).eta_seconds == eta


def test_the_place_renders_as_the_documented_object():
    assert Place(3, 12.5).as_json() == {"position": 3, "eta_seconds": 12.5}
    assert Place(0, None).as_json() == {"position": 0, "eta_seconds": None}
