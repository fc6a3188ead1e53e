"""Tasks only move forward."""

import itertools

import pytest

from shared.lifecycle import FINAL_STATUSES, TaskStatus, moves_forward

S = TaskStatus


@pytest.mark.parametrize(
    "current, new",
    [
        (S.QUEUED, S.PROCESSING),
        (S.QUEUED, S.PROCESSED),
        (S.QUEUED, S.FAILED),
        (S.QUEUED, S.CANCELED),
        (S.PROCESSING, S.PROCESSING),
        (S.PROCESSING, S.PROCESSED),
        (S.PROCESSING, S.FAILED),
        (S.PROCESSING, S.CANCELED),
        (S.QUEUED, S.QUEUED),
    ],
)
def test_forward_moves(current, new):
    assert moves_forward(current, new)


def test_nothing_leaves_a_final_status():
    for current, new in itertools.product(FINAL_STATUSES, TaskStatus):
        assert not moves_forward(current, new), (current, new)


def test_processing_never_goes_back_to_queued():
    assert not moves_forward(S.PROCESSING, S.QUEUED)
