"""End-to-end fixtures: tiny sources served over HTTP on loopback, and the stacks these
tests start beside the session's `local_stack` (two workers; a database of its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e_media import make_source
from e2e_stack import E2EStack, running_stack

from infra.local.fileserver import ServedFolder, serve_folder


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e-media")


@pytest.fixture(scope="session")
def source_server(media_dir: Path) -> Iterator[ServedFolder]:
    """The media folder over HTTP on loopback (the stacks allow loopback sources)."""
    with serve_folder(media_dir) as served:
        yield served


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
