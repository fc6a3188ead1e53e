"""Schemathesis in its stateful mode against the running stack, through the gateway:
scenarios follow the document's links (submit, then get or delete what was created)
and the links it infers, with the document's own checks (no 500, every answer as the
document says, a created task reachable, a deleted one gone) and this suite's leak scan
on every answer.

The stateless run over every operation is tests/integration/api/test_api_schemathesis.py."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from services.api.openapi import DOCUMENT_PATH
from tests.support.security import SCANNED, leaks_in
from tests.support.tus import sweep_every_upload

pytestmark = pytest.mark.security

# As in the stateless run: well-formed data a schema cannot tell apart from refused data
# (a URL at a private address: 422; random bytes as a file: 415; rate limits: 429).
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "415", "422", "429", "503"],
            },
            "unsupported_method": {"enabled": False},
        },
    }
)

# A tus PATCH body is raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@pytest.fixture(scope="module", autouse=True)
def _no_upload_left(local_stack):
    """The resumable uploads the generated requests created are swept afterwards."""
    yield
    sweep_every_upload(local_stack.settings.database_url)


schema = schemathesis.openapi.from_path(DOCUMENT_PATH, config=CONFIG)


def _sent_strings(case) -> list[str]:
    """Every string the request carried, raw and JSON-escaped: the api may echo them
    (a task shows its source URL) and an echo is not a leak."""
    found: list[str] = []

    def walk(value) -> None:
        if isinstance(value, str):
            found.extend([value, json.dumps(value, ensure_ascii=False)[1:-1], json.dumps(value)[1:-1]])
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    for part in (case.body, case.path_parameters, case.query, case.headers):
        walk(part)
    return sorted(set(found), key=len, reverse=True)


def test_stateful_scenarios_find_no_500_no_schema_violation_and_no_leak(local_stack, minted_user):
    machine = schema.as_state_machine()
    base_url = local_stack.base_url
    answers: Counter[tuple[str, str, int]] = Counter()

    class Scenarios(machine):
        def setup(self) -> None:
            # A user of its own per scenario: the per-user submission limit never decides
            # what a scenario can reach.
            self.user = minted_user()

        def get_call_kwargs(self, case) -> dict:
            return {
                "base_url": base_url,
                "headers": {"Authorization": f"Bearer {self.user.token}"},
                "timeout": 60,
            }

        def after_call(self, response, case) -> None:
            super().after_call(response, case)
            answers[(case.method, case.path, response.status_code)] += 1
            kind = response.headers.get("content-type", "")
            kind = kind[0] if isinstance(kind, list) else kind
            if kind.startswith("application/json"):
                SCANNED.responses += 1
                found = leaks_in(response.content.decode("utf-8", "replace"), echoed=_sent_strings(case))
                assert not found, (
                    f"{case.method} {case.formatted_path} -> {response.status_code} leaks {found}"
                )

    # Derandomized: the same scenarios every run. Random ones chained no GET of a created
    # task in one run of 40 (19 tasks created, 4 deleted through links), and the coverage
    # checks below must not depend on chance.
    Scenarios.run(
        settings=settings(
            max_examples=40,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )

    print(
        "\n"
        + "\n".join(
            f"{count:4d} {method} {path} -> {status}"
            for (method, path, status), count in sorted(answers.items())
        )
    )
    # The scenarios did chain calls: tasks they created were fetched and deleted by id.
    assert answers[("GET", "/tasks/{task_id}", 200)] > 0
    assert answers[("DELETE", "/tasks/{task_id}", 204)] > 0
    assert not any(status >= 500 for _, _, status in answers)
