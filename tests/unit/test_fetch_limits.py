"""When a source download must end: the pure judgment the fetcher's watchdog applies."""

from __future__ import annotations

import pytest

from services.transcoder.fetch import FetchPolicy, download_limit_passed

POLICY = FetchPolicy(
    allow_loopback=False,
    max_bytes=10**9,
    connect_timeout=5,
    read_timeout=30,
    total_timeout=600,
    min_bytes_per_second=16384,
    throughput_grace=20,
    max_redirects=5,
)


@pytest.mark.parametrize(
    "elapsed, received, reason",
    [
        (1, 0, None),  # a slow start is not held against the source
        (19.9, 0, None),
        (20, 0, "the source sends too slowly (0 bytes in 20 s; it must average at least 16384 bytes/s)"),
        (
            30,
            16384 * 30 - 1,
            "the source sends too slowly (491519 bytes in 30 s; it must average at least 16384 bytes/s)",
        ),
        (30, 16384 * 30, None),
        (600, 10**9, None),
        (600.1, 10**9, "the source did not download within 600 s"),  # fast enough, but not done
    ],
)
def test_a_download_ends_at_the_deadline_or_below_the_rate_after_the_grace(elapsed, received, reason):
    assert download_limit_passed(POLICY, elapsed=elapsed, received=received) == reason


def test_a_floor_of_zero_leaves_only_the_deadline():
    unfloored = FetchPolicy(**{**POLICY.__dict__, "min_bytes_per_second": 0})
    assert download_limit_passed(unfloored, elapsed=599, received=0) is None
    assert (
        download_limit_passed(unfloored, elapsed=601, received=0)
        == "the source did not download within 600 s"
    )
