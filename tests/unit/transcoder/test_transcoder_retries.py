"""Retrying in place, without any server: the tries come from RETRY_TRIES, a stop
ends them, other failures are not retried."""

import pytest
from pydantic import ValidationError

from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from services.transcoder.retries import RetryPolicy
from services.transcoder.runner import StopSignal
from shared.config import Settings

FAST = RetryPolicy(tries=3, initial_seconds=0.001)


class Flaky:
    """Fails with ``failure`` the first ``failures`` calls, then returns how many calls it took."""

    def __init__(self, failures: int, failure: Exception | None = None) -> None:
        self.failures = failures
        self.failure = failure or TransientFailure("storage answered 503")
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.failure
        return self.calls


@pytest.mark.parametrize("stop", [None, StopSignal()])
def test_a_transient_failure_is_tried_again(stop):
    operation = Flaky(2)
    assert FAST.transient(operation, stop=stop) == 3


@pytest.mark.parametrize("tries", [1, 2, 5])
def test_the_tries_run_out_with_the_last_reason(tries):
    operation = Flaky(1000)
    with pytest.raises(TransientFailure) as raised:
        RetryPolicy(tries=tries, initial_seconds=0.001).transient(operation)
    assert operation.calls == tries
    assert raised.value.reason == f"storage answered 503 (gave up after {tries} tries)"


def test_a_permanent_failure_is_not_tried_again():
    operation = Flaky(1, PermanentFailure("refused"))
    with pytest.raises(PermanentFailure):
        FAST.transient(operation)
    assert operation.calls == 1


def test_a_stop_ends_the_tries():
    stop = StopSignal()
    stop.set("canceled")
    operation = Flaky(0)
    with pytest.raises(ProcessingStopped):
        FAST.transient(operation, stop=stop)
    assert operation.calls == 0


def test_database_errors_are_tried_again_then_raised():
    operation = Flaky(1000, OSError("connection refused"))
    with pytest.raises(OSError):
        FAST.database(operation)
    assert operation.calls == 3


def test_the_policy_follows_the_settings_not_the_attempts():
    policy = RetryPolicy.from_settings(Settings(retry_tries=5, max_attempts=2, retry_initial_seconds=0.5))
    assert (policy.tries, policy.initial_seconds) == (5, 0.5)


def test_at_least_one_try():
    with pytest.raises(ValidationError, match="retry_tries"):
        Settings(retry_tries=0)
