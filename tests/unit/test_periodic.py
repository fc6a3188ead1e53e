"""The background-round thread: rounds repeat, a failed round does not end them, stop ends them."""

from __future__ import annotations

import threading

from shared.periodic import PeriodicThread


def test_a_failed_round_is_logged_and_the_rounds_go_on(caplog):
    calls: list[int] = []
    third = threading.Event()

    def each_round() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("the database went away")
        if len(calls) == 3:
            third.set()

    thread = PeriodicThread("test-rounds", 0.01, each_round)
    thread.start()
    try:
        assert third.wait(10), calls
    finally:
        thread.stop()
    assert "test-rounds: a round failed" in caplog.text


def test_stop_ends_the_thread_and_no_round_runs_after_it():
    calls: list[int] = []
    thread = PeriodicThread("test-stop", 0.01, lambda: calls.append(1))
    thread.start()
    thread.stop()
    count = len(calls)
    assert not any(t.name == "test-stop" for t in threading.enumerate())
    assert len(calls) == count


def test_an_interval_of_zero_never_starts_a_thread():
    thread = PeriodicThread("test-off", 0, lambda: None)
    thread.start()
    assert not any(t.name == "test-off" for t in threading.enumerate())
    thread.stop()
