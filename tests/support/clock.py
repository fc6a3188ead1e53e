"""The clock the local services share with the tests."""

from __future__ import annotations

import time


def start_early_in_a_minute(margin: float = 15.0) -> None:
    """Wait for the next minute when fewer than ``margin`` seconds are left in this one.

    The rate limits (``shared.ratelimit``) count in fixed minutes of this machine's clock,
    which the services share: a test whose requests must all fall in one window starts
    them here."""
    left = 60 - time.time() % 60
    if left < margin:
        time.sleep(left + 0.1)
