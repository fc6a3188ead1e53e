"""Dockerfile rules checked without Docker (the hadolint-like ones), the pipeline's
order, the versions the images, locks and docs agree on, and checkov's verdict."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.support.infra import DOCKERFILES, REPO, SERVICES, TERRAFORM, dockerfile_instructions, final_stage

SCAN_VENV = REPO / ".venv-scan"
# The Makefile's install step (uv, from requirements-scan.lock).
INSTALL_SCAN = "make install"


def _base_images() -> set[str]:
    images = set()
    for path in DOCKERFILES.values():
        for instruction, arguments in dockerfile_instructions(path):
            if instruction == "FROM":
                images.add(arguments.split()[0])
    return images


@pytest.mark.parametrize("service", SERVICES)
def test_final_stage_runs_as_a_non_root_user(service):
    stage = final_stage(dockerfile_instructions(DOCKERFILES[service]))
    users = [arguments for instruction, arguments in stage if instruction == "USER"]
    assert users, "the final stage never switches user"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    # Nothing may run as root after the switch.
    after = stage[[i for i, (instruction, _) in enumerate(stage) if instruction == "USER"][-1] :]
    assert not any(instruction == "RUN" for instruction, _ in after)


@pytest.mark.parametrize("service", SERVICES)
def test_base_images_are_pinned_and_never_latest(service):
    for instruction, arguments in dockerfile_instructions(DOCKERFILES[service]):
        if instruction != "FROM":
            continue
        image = arguments.split()[0]
        assert ":latest" not in image and ":" in image.split("@")[0], image
        tag = image.split("@")[0].split(":", 1)[1]
        assert re.fullmatch(r"\d+\.\d+\.\d+-[a-z]+-[a-z]+", tag) or "@sha256:" in image, image


@pytest.mark.parametrize("service", SERVICES)
def test_no_add_no_keys_no_secrets_in_images(service):
    for instruction, arguments in dockerfile_instructions(DOCKERFILES[service]):
        assert instruction != "ADD", "COPY only: ADD fetches URLs and unpacks archives"
        if instruction == "COPY":
            assert not re.search(r"\.(pem|key|p12|json)\b|\.env\b|credentials", arguments), arguments
        if instruction in {"ENV", "ARG"}:
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|PRIVATE_KEY)\s*=", arguments, re.I), arguments


@pytest.mark.parametrize("service", SERVICES)
def test_dependencies_come_from_the_runtime_lock_with_hashes(service):
    runs = " ".join(
        arguments
        for instruction, arguments in dockerfile_instructions(DOCKERFILES[service])
        if instruction == "RUN"
    )
    assert "--require-hashes" in runs and "--no-deps" in runs
    assert "requirements-runtime.lock" in runs
    final = " ".join(
        arguments for instruction, arguments in final_stage(dockerfile_instructions(DOCKERFILES[service]))
    )
    for tool in ("gcc", "build-essential", "pip install"):
        assert tool not in final, f"{tool} in the final stage"


@pytest.mark.parametrize("service", ["auth", "api"])
def test_http_services_run_gunicorn_with_a_health_check(service):
    pairs = dict(final_stage(dockerfile_instructions(DOCKERFILES[service])))
    assert json.loads(pairs["CMD"]) == [
        "gunicorn",
        f"--config=services/{service}/gunicorn_config.py",
        f"services.{service}:create_app()",
    ]
    assert (REPO / "services" / service / "gunicorn_config.py").is_file()
    assert "/healthz" in pairs["HEALTHCHECK"] and pairs["HEALTHCHECK"].startswith("--interval")
    assert pairs["STOPSIGNAL"] == "SIGTERM"


def test_the_transcoder_image_has_the_launchers_ffmpeg_starts_through():
    # services/transcoder/runner.py: setpriv (killed with the worker), prlimit (memory cap).
    runs = " ".join(
        arguments
        for instruction, arguments in final_stage(dockerfile_instructions(DOCKERFILES["transcoder"]))
        if instruction == "RUN"
    )
    assert "test -x /usr/bin/setpriv" in runs and "test -x /usr/bin/prlimit" in runs


def test_workers_run_their_modules_and_say_they_have_no_probe():
    transcoder = final_stage(dockerfile_instructions(DOCKERFILES["transcoder"]))
    assert json.loads(dict(transcoder)["CMD"]) == ["python", "-m", "services.transcoder"]
    apt = [
        arguments for instruction, arguments in transcoder if instruction == "RUN" and "apt-get" in arguments
    ]
    assert apt and "install -y --no-install-recommends ffmpeg" in apt[0]
    assert "rm -rf /var/lib/apt/lists/*" in apt[0]
    notifier = final_stage(dockerfile_instructions(DOCKERFILES["notifier"]))
    assert json.loads(dict(notifier)["CMD"]) == ["python", "-m", "services.notifier"]
    for stage in (transcoder, notifier):
        assert dict(stage)["HEALTHCHECK"] == "NONE"


def test_build_context_sends_only_what_images_copy():
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allow-list: everything is excluded first"
    assert set(lines) >= {"!shared/", "!services/", "!requirements-runtime.lock"}


# --- versions ------------------------------------------------------------------------------


def test_python_versions_agree_everywhere(cloudbuild, root):
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert ">=3.11" in requires and "<3.12" in requires
    images = _base_images()
    assert len(images) == 1, f"the four images use different bases: {images}"
    base = images.pop()
    assert base.startswith("python:3.11.")
    assert cloudbuild["substitutions"]["_PYTHON_IMAGE"] == base
    function = root.resource("google_cloudfunctions2_function", "notifier")
    assert function["build_config"][0]["runtime"] == "python311"
    deploy = (REPO / "docs" / "deploy.md").read_text()
    assert base.split("@")[0] in deploy
    assert "3.11" in deploy


def _pins(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", path.read_text(), re.M))


def test_runtime_lock_agrees_with_the_full_lock_and_has_no_test_packages():
    runtime, full = _pins(REPO / "requirements-runtime.lock"), _pins(REPO / "requirements.lock")
    assert runtime
    disagreeing = {
        name: (version, full.get(name)) for name, version in runtime.items() if full.get(name) != version
    }
    assert not disagreeing
    for test_only in ("pytest", "testcontainers", "locust", "schemathesis", "checkov"):
        assert test_only not in runtime


# --- cloudbuild.yaml -----------------------------------------------------------------------


def _ancestors(steps: list[dict]) -> dict[str, set[str]]:
    """Cloud Build order: no waitFor = after every earlier step; '-' = at the start."""
    ids = [step["id"] for step in steps]
    direct: dict[str, set[str]] = {}
    for index, step in enumerate(steps):
        wait = step.get("waitFor")
        if wait is None:
            direct[step["id"]] = set(ids[:index])
        else:
            direct[step["id"]] = {name for name in wait if name != "-"}
            assert direct[step["id"]] <= set(ids[:index]), f"{step['id']} waits for a later step"
    closure: dict[str, set[str]] = {}
    for step_id in ids:
        seen, stack = set(), list(direct[step_id])
        while stack:
            name = stack.pop()
            if name not in seen:
                seen.add(name)
                stack.extend(direct[name])
        closure[step_id] = seen
    return closure


def test_pipeline_builds_the_four_dockerfiles_tagged_with_the_commit(cloudbuild):
    builds = [step for step in cloudbuild["steps"] if step.get("args", [None])[0] == "build"]
    dockerfiles = {step["args"][step["args"].index("--file") + 1] for step in builds}
    assert dockerfiles == {f"services/{service}/Dockerfile" for service in SERVICES}
    for step in builds:
        tag = step["args"][step["args"].index("--tag") + 1]
        assert tag.endswith(":${COMMIT_SHA}") and "latest" not in tag
        assert step["args"][-1] == ".", "the build context is the repository root"
    for service in SERVICES:
        assert (REPO / f"services/{service}/Dockerfile").is_file()


def test_the_smoke_check_expects_readyz_hidden_by_the_load_balancer(cloudbuild):
    script = next(step for step in cloudbuild["steps"] if step["id"] == "smoke")["args"][-1]
    fetched = re.search(r"for path in ([^;]+); do", script).group(1).split()
    assert "/readyz" not in fetched and {"/healthz", "/openapi.json"} <= set(fetched)
    assert '"$${base_url}/readyz"' in script and 'test "$${status}" = 404' in script


def test_pipeline_tests_and_scans_before_anything_is_pushed_or_deployed(cloudbuild):
    steps = cloudbuild["steps"]
    ancestors = _ancestors(steps)
    pushes = [step["id"] for step in steps if step.get("args", [None])[0] == "push"]
    assert len(pushes) == len(SERVICES)
    assert "make test" in next(step for step in steps if step["id"] == "test")["args"][-1]
    for step_id in pushes + ["migrate", "db-roles", "rollout", "smoke"]:
        assert {"test", "scan"} <= ancestors[step_id], step_id
    for step_id in pushes:
        assert "migrate" not in ancestors[step_id]
    assert set(pushes) <= ancestors["migrate"] and "migrate" in ancestors["rollout"]


def test_rollout_applies_the_commit_as_image_tag(cloudbuild):
    rollout = next(step for step in cloudbuild["steps"] if step["id"] == "rollout")
    script = rollout["args"][-1]
    assert "terraform apply" in script and "-var=image_tag=${COMMIT_SHA}" in script
    assert cloudbuild["serviceAccount"].split("/")[-1].startswith("idrl-deployer@")
    assert "workerPools" in cloudbuild["options"]["pool"]["name"]


# --- checkov -------------------------------------------------------------------------------


def _checkov(*arguments: str) -> dict:
    checkov = SCAN_VENV / "bin" / "checkov"
    assert checkov.exists(), f"checkov is missing; install it with: {INSTALL_SCAN}"
    result = subprocess.run(
        [str(checkov), "--skip-download", "--compact", "-o", "json", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert isinstance(report, dict), "one framework per run: one report"
    assert report["summary"]["parsing_errors"] == 0
    return report


def test_checkov_finds_nothing_in_terraform():
    report = _checkov("--framework", "terraform", "-d", "infra/terraform")
    failed = [(check["check_id"], check["resource"]) for check in report["results"]["failed_checks"]]
    assert not failed
    assert report["summary"]["passed"] > 100
    assert report["summary"]["resource_count"] > 100


def test_checkov_finds_nothing_in_the_dockerfiles():
    files = [arg for service in SERVICES for arg in ("-f", f"services/{service}/Dockerfile")]
    report = _checkov("--framework", "dockerfile", *files)
    assert not [(check["check_id"], check["file_path"]) for check in report["results"]["failed_checks"]]
    assert report["summary"]["skipped"] == 0
    assert report["summary"]["passed"] > 0


def test_every_checkov_skip_gives_its_reason_next_to_the_resource():
    skips = []
    for path in TERRAFORM.rglob("*.tf"):
        skips += re.findall(r"checkov:skip=(\w+)(?::(.*))?", path.read_text())
    assert skips
    for check_id, reason in skips:
        assert reason and len(reason.strip()) >= 40, f"{check_id} skipped without a reason"
