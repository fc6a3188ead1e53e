"""What to do after a delivery attempt: pure decisions, no I/O (the dispatcher does that).

- 2xx: delivered.
- No answer (a network error, a timeout), 5xx, 408 and 429: retried. A ``Retry-After``
  (seconds or an HTTP date) sets the pause, up to the longest pause.
- Any other answer (3xx, since redirects are not followed, and other 4xx): failed at once.

Pauses grow three-fold from ``initial`` (10 s, 30 s, 1.5 min, 4.5 min, 13.5 min, 40.5 min,
about 2 h) up to ``maximum`` (4 h), each drawn between half and all of its nominal length
(jitter, so endpoints that failed together are not retried together). A delivery is
retried until ``window`` (24 h) after it was created: the first attempt that fails past
it marks it failed, so the retries always span the whole window.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

RETRIED_STATUSES = frozenset({408, 429})
FACTOR = 3.0


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"


@dataclass(frozen=True)
class RetryPolicy:
    initial: float  # seconds
    maximum: float
    window: float
    disable_after: float


@dataclass(frozen=True)
class Attempt:
    """What one attempt got: a status code, or no answer at all (``error``)."""

    status_code: int | None
    error: str | None = None
    retry_after: str | None = None  # the header as sent


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    next_attempt_at: datetime | None = None


def nominal_pause(policy: RetryPolicy, attempts: int) -> float:
    """The pause after the ``attempts``-th failed attempt, before jitter."""
    return min(policy.maximum, policy.initial * FACTOR ** max(0, attempts - 1))


def retry_after_seconds(header: str | None, now: datetime) -> float | None:
    """The pause a ``Retry-After`` header asks for, or None when absent or unreadable."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        return float(header)
    try:
        moment = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - now).total_seconds())


def verdict_of(attempt: Attempt) -> Verdict:
    code = attempt.status_code
    if code is None or code >= 500 or code in RETRIED_STATUSES:
        return Verdict.RETRY
    if 200 <= code < 300:
        return Verdict.DELIVERED
    return Verdict.FAILED


def decide(
    policy: RetryPolicy,
    attempt: Attempt,
    *,
    attempts: int,
    created_at: datetime,
    now: datetime,
    draw: Callable[[float, float], float] = random.uniform,
) -> Decision:
    """What follows the ``attempts``-th attempt (counting this one) of a delivery
    created at ``created_at``."""
    verdict = verdict_of(attempt)
    if verdict is not Verdict.RETRY:
        return Decision(verdict)
    if (now - created_at).total_seconds() >= policy.window:
        return Decision(Verdict.FAILED)
    asked = retry_after_seconds(attempt.retry_after, now)
    if asked is not None:
        pause = min(asked, policy.maximum)
    else:
        nominal = nominal_pause(policy, attempts)
        pause = draw(nominal / 2, nominal)
    return Decision(Verdict.RETRY, now + timedelta(seconds=pause))


def should_disable(policy: RetryPolicy, failing_since: datetime | None, now: datetime) -> bool:
    """Whether an endpoint whose every attempt failed since ``failing_since`` is disabled."""
    return failing_since is not None and (now - failing_since).total_seconds() >= policy.disable_after
