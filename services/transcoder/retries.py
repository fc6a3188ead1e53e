"""Retrying in place: how long one operation is tried again within an attempt at a task.

A source download, a clip's upload, deleting a task's outputs and reading the task are
tried ``retry_tries`` times, the pauses doubling from ``retry_initial_seconds`` up to
30 s (tenacity). What happens when the tries run out is not decided here: the task's
attempts across deliveries are counted apart (``max_attempts``, ``decisions.conclude``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.transcoder.errors import TransientFailure
from services.transcoder.runner import StopSignal
from shared.config import Settings
from shared.logging import task_logger

log = task_logger(__name__)

T = TypeVar("T")

RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    tries: int
    initial_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(tries=settings.retry_tries, initial_seconds=settings.retry_initial_seconds)

    def transient(self, operation: Callable[[], T], *, stop: StopSignal | None = None) -> T:
        """Run ``operation``, retrying a :class:`TransientFailure`; a ``stop`` ends the
        tries and interrupts the pause between them. When the tries run out the failure
        is still transient, with the last reason and ``(gave up after N tries)``."""
        retrying = Retrying(
            retry=retry_if_exception_type(TransientFailure),
            stop=stop_after_attempt(self.tries),
            wait=self._backoff(),
            sleep=_pause(stop),
            before_sleep=lambda state: log.warning(
                "transient failure, try %d of %d: %s",
                state.attempt_number,
                self.tries,
                state.outcome.exception() if state.outcome else None,
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if stop is not None:
                        stop.raise_if_set()
                    return operation()
        except TransientFailure as failure:
            raise TransientFailure(f"{failure.reason} (gave up after {self.tries} tries)") from failure
        raise AssertionError("unreachable")

    def database(self, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying database and socket errors; the last one is raised."""
        retrying = Retrying(
            retry=retry_if_exception_type((DBAPIError, OSError)),
            stop=stop_after_attempt(self.tries),
            wait=self._backoff(),
            reraise=True,
        )
        return retrying(operation)

    def _backoff(self) -> wait_exponential:
        return wait_exponential(multiplier=self.initial_seconds, max=RETRY_MAX_SECONDS)


def _pause(stop: StopSignal | None) -> Callable[[float], None]:
    """How the tries wait: on ``stop``, which ends the wait when it is set, or plain sleep."""
    if stop is None:
        return time.sleep

    def pause(seconds: float) -> None:
        stop.wait(seconds)

    return pause
