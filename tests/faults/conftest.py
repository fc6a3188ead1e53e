"""Fixtures of the fault drills: tiny sources served on loopback, and the recovery times
the drills measure, printed at the end of the run (docs/reliability.md records them).

Each drill module starts its own :func:`faults_kit.fault_stack`, so a fault never
reaches another module's stack.
"""

from __future__ import annotations

import functools
import http.server
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# The end-to-end helpers (client, media, stack readers) are imported by module name,
# as pytest does for tests/e2e itself; the folder may not have been collected.
_E2E_DIR = str(Path(__file__).resolve().parents[1] / "e2e")
if _E2E_DIR not in sys.path:
    sys.path.insert(0, _E2E_DIR)

from e2e_media import make_source  # noqa: E402

_RECOVERIES = pytest.StashKey[list]()


@dataclass(frozen=True)
class Recovery:
    drill: str
    seconds: float
    detail: str


@dataclass(frozen=True)
class SourceServer:
    folder: Path
    base_url: str

    def url(self, path: Path) -> str:
        return f"{self.base_url}/{path.relative_to(self.folder)}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def faults_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults-media")


@pytest.fixture(scope="session")
def source_server(faults_media: Path) -> Iterator[SourceServer]:
    """A plain HTTP server on 127.0.0.1 (the stacks allow loopback sources)."""
    handler = functools.partial(_QuietHandler, directory=str(faults_media))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SourceServer(faults_media, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def short_source(faults_media: Path) -> Path:
    """3 s, 320x240, with sound: one part, one 5 s clip."""
    return make_source(faults_media / "short.mp4", seconds=3)


@pytest.fixture(scope="session")
def two_part_source(faults_media: Path) -> Path:
    """23 s, 320x240, with sound: parts of 20 and 3 s, clips of 22 and 5 s."""
    return make_source(faults_media / "two-parts.mp4", seconds=23)


@pytest.fixture
def record_recovery(request: pytest.FixtureRequest) -> Callable[[float, str], None]:
    """Record this drill's recovery time (seconds from the fault's end to the final
    state); printed in the run's summary, never asserted."""

    def record(seconds: float, detail: str = "") -> None:
        request.config.stash.setdefault(_RECOVERIES, []).append(
            Recovery(request.node.name, seconds, detail))
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
            f"{recovery.drill.ljust(width)}  {recovery.seconds:6.1f} s  {recovery.detail}")
