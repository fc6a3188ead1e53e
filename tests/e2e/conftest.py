"""End-to-end fixtures: tiny sources served over HTTP on loopback, and the stacks these
tests start beside the session's `local_stack` (two workers; a database of its own)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_media import make_source
from e2e_stack import E2EStack, running_stack


@dataclass(frozen=True)
class SourceServer:
    """A plain HTTP server on 127.0.0.1 serving ``folder`` (the stacks run with
    allow_loopback_sources=true, so their workers may fetch from it)."""

    folder: Path
    base_url: str

    def url(self, path: Path) -> str:
        return f"{self.base_url}/{path.relative_to(self.folder)}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-media")


@pytest.fixture(scope="session")
def source_server(media_dir: Path) -> Iterator[SourceServer]:
    handler = functools.partial(_QuietHandler, directory=str(media_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SourceServer(media_dir, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="session")
def short_source(media_dir: Path) -> Path:
    """3 s, 320x240, with sound: one part, a 5 s clip."""
    return make_source(media_dir / "short.mp4", seconds=3)


@pytest.fixture(scope="session")
def two_part_source(media_dir: Path) -> Path:
    """23 s, 320x240, with sound: parts of 20 and 3 s, clips of 22 and 5 s."""
    return make_source(media_dir / "two-parts.mp4", seconds=23)


@pytest.fixture(scope="session")
def long_clip_source(media_dir: Path) -> Path:
    """12 s, 320x240: one clip long enough to be caught while ffmpeg makes it."""
    return make_source(media_dir / "twelve-seconds.mp4", seconds=12)


@pytest.fixture(scope="session")
def two_worker_stack(tmp_path_factory: pytest.TempPathFactory, pubsub_emulator_host: str,
                     storage_emulator_host: str) -> Iterator[E2EStack]:
    """The whole stack with two transcoder workers on the same subscription."""
    with running_stack(tmp_path_factory.mktemp("e2e-two-workers"),
                       pubsub_emulator_host=pubsub_emulator_host,
                       storage_emulator_host=storage_emulator_host,
                       transcoder_workers=2) as stack:
        yield stack
