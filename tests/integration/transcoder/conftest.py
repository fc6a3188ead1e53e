"""What the worker tests of this folder share: an engine on the test's database and the
notifier applying the worker's events, both made from the module's own ``tsettings``."""

from __future__ import annotations

import pytest

from shared.db import create_engine
from tests.support.worker import Notifier


@pytest.fixture
def engine(tsettings):
    engine = create_engine(tsettings)
    yield engine
    engine.dispose()


@pytest.fixture
def notifier(tsettings, engine):
    with Notifier(tsettings, engine).running() as running:
        yield running
