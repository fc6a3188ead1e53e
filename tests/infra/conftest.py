"""Fixtures of the infrastructure tests (helpers live in tests/support/infra.py)."""

from __future__ import annotations

import pytest
import yaml

from tests.support.infra import REPO, TERRAFORM, TerraformDir, parse_dir


@pytest.fixture(scope="session")
def root() -> TerraformDir:
    return parse_dir(TERRAFORM)


@pytest.fixture(scope="session")
def mig_module() -> TerraformDir:
    return parse_dir(TERRAFORM / "modules" / "container_mig")


@pytest.fixture(scope="session")
def queue_module() -> TerraformDir:
    return parse_dir(TERRAFORM / "modules" / "pubsub_queue")


@pytest.fixture(scope="session")
def cloudbuild() -> dict:
    with (REPO / "cloudbuild.yaml").open() as handle:
        return yaml.safe_load(handle)
