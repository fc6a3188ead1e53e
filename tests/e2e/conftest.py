"""End-to-end fixtures: tiny sources served over HTTP on loopback, and the stacks these
tests start beside the session's `local_stack` (two workers; a database of its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.stack import E2EStack, running_stack


@pytest.fixture(scope="session")
def two_worker_stack(
    tmp_path_factory: pytest.TempPathFactory, pubsub_emulator_host: str, storage_emulator_host: str
) -> Iterator[E2EStack]:
    """The whole stack with two transcoder workers on the same subscription."""
    with running_stack(
        tmp_path_factory.mktemp("e2e-two-workers"),
        pubsub_emulator_host=pubsub_emulator_host,
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=2,
    ) as stack:
        yield stack
