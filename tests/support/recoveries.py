"""The recovery times the fault drills measure, printed at the end of the run
(docs/reliability.md records them), never asserted.

A drill records its time in its report's ``user_properties``; this plugin reads them
from the reports, so the summary also comes out when the tests ran in worker
processes (pytest-xdist) and only the reports reached the process that prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

_SECONDS = "recovery_seconds"
_DETAIL = "recovery_detail"


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
        request.node.user_properties.append((_SECONDS, round(seconds, 1)))
        request.node.user_properties.append((_DETAIL, detail))

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    properties = list(report.user_properties)
    seconds = [value for name, value in properties if name == _SECONDS]
    details = [value for name, value in properties if name == _DETAIL]
    for index, value in enumerate(seconds):
        drill = report.nodeid.rsplit("::", 1)[-1]
        detail = details[index] if index < len(details) else ""
        _REPORTED.append(Recovery(drill, float(value), str(detail)))


# Filled by pytest_runtest_logreport, which is not handed the config.
_REPORTED: list[Recovery] = []


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _REPORTED:
        return
    terminalreporter.section("fault drills: recovery times (fault's end -> final state)")
    width = max(len(recovery.drill) for recovery in _REPORTED)
    for recovery in _REPORTED:
        terminalreporter.write_line(
            f"{recovery.drill.ljust(width)}  {recovery.seconds:6.1f} s  {recovery.detail}"
        )
