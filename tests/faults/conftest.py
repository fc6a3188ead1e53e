"""Fixtures of the fault drills: tiny sources served on loopback, and the recovery times
the drills measure, printed at the end of the run (docs/reliability.md records them).

Each drill module starts its own :func:`tests.support.faults.fault_stack`, so a fault never
reaches another module's stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

_RECOVERIES = pytest.StashKey[list]()


@dataclass(frozen=True)
class Recovery:
    drill: str
    seconds: float
    detail: str


@pytest.fixture
def record_recovery(request: pytest.FixtureRequest) -> Callable[[float, str], None]:
    """Record this drill's recovery time (seconds from the fault's end to the final
    state); printed in the run's summary, never asserted."""

    def record(seconds: float, detail: str = "") -> None:
        request.config.stash.setdefault(_RECOVERIES, []).append(Recovery(request.node.name, seconds, detail))
        request.node.user_properties.append(("recovery_seconds", round(seconds, 1)))

    return record


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    recoveries = config.stash.get(_RECOVERIES, [])
    if not recoveries:
        return
    terminalreporter.section("fault drills: recovery times (fault's end -> final state)")
    width = max(len(recovery.drill) for recovery in recoveries)
    for recovery in recoveries:
        terminalreporter.write_line(
            f"{recovery.drill.ljust(width)}  {recovery.seconds:6.1f} s  {recovery.detail}"
        )
