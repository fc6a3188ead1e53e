"""The services' entry points as they start in production: each stops at once, naming
what is missing, when ENVIRONMENT=production lacks a setting it needs; given all of
them it runs, logging JSON lines; and the app factories leave the process's logging
alone."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from infra.local import ManagedProcess, free_port
from infra.local.process import http_probe, wait_until
from shared.config import Settings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def entry_point(service: str, port: int) -> list[str]:
    """The command the service's Dockerfile runs (gunicorn bound to a free port)."""
    if service in ("api", "auth"):
        return [
            PYTHON,
            "-m",
            "gunicorn",
            "--config",
            f"services/{service}/gunicorn_config.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            f"services.{service}:create_app()",
        ]
    return [PYTHON, "-m", f"services.{service}"]


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any setting or emulator endpoint, plus ``variables``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in Settings.model_fields
        and name not in ("PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
    }
    return env | {"PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"} | variables


# What Terraform gives each service (infra/terraform/main.tf, services.tf, notifier.tf).
PRODUCTION = {
    "ENVIRONMENT": "production",
    "GOOGLE_CLOUD_PROJECT": "idrl-prod",
    "INSTANCE_CONNECTION_NAME": "idrl-prod:us-central1:idrl",
    "DB_PASSWORD": "from-secret-manager",
    "UPLOADS_BUCKET": "idrl-prod-uploads",
    "CLIPS_BUCKET": "idrl-prod-clips",
    "AUTH_JWKS_URL": "https://videos.example/auth/.well-known/jwks.json",
    "TOKEN_SIGNING_KEY_SECRET": "projects/idrl-prod/secrets/token-signing-key/versions/latest",
    "PUBLIC_BASE_URL": "https://videos.example",
    "WEBHOOK_SECRET_KEY": "from-secret-manager",
}


@pytest.mark.parametrize(
    ("service", "left_out", "named"),
    [
        ("api", "INSTANCE_CONNECTION_NAME", "INSTANCE_CONNECTION_NAME or DATABASE_URL"),
        ("api", "AUTH_JWKS_URL", "AUTH_JWKS_URL"),
        ("auth", "INSTANCE_CONNECTION_NAME", "INSTANCE_CONNECTION_NAME or DATABASE_URL"),
        (
            "auth",
            "TOKEN_SIGNING_KEY_SECRET",
            "TOKEN_SIGNING_KEY or TOKEN_SIGNING_KEY_FILE or TOKEN_SIGNING_KEY_SECRET",
        ),
        ("transcoder", "INSTANCE_CONNECTION_NAME", "INSTANCE_CONNECTION_NAME or DATABASE_URL"),
        ("transcoder", "UPLOADS_BUCKET", "UPLOADS_BUCKET"),
        ("notifier", "INSTANCE_CONNECTION_NAME", "INSTANCE_CONNECTION_NAME or DATABASE_URL"),
        ("notifier", "CLIPS_BUCKET", "CLIPS_BUCKET"),
        ("api", "WEBHOOK_SECRET_KEY", "WEBHOOK_SECRET_KEY"),
        ("notifier", "PUBLIC_BASE_URL", "PUBLIC_BASE_URL"),
        ("dispatcher", "INSTANCE_CONNECTION_NAME", "INSTANCE_CONNECTION_NAME or DATABASE_URL"),
        ("dispatcher", "WEBHOOK_SECRET_KEY", "WEBHOOK_SECRET_KEY"),
    ],
)
def test_a_production_entry_point_missing_a_setting_stops_at_start_naming_it(service, left_out, named):
    variables = {name: value for name, value in PRODUCTION.items() if name != left_out}
    started = subprocess.run(
        entry_point(service, free_port()),
        env=clean_environment(**variables),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = started.stdout + started.stderr
    assert started.returncode != 0, output
    assert f"{service}: ENVIRONMENT=production but required setting(s) missing: {named}" in output
    assert "Traceback" not in output
    # gunicorn's master stopped before it started a worker.
    assert "Booting worker" not in output


@pytest.mark.parametrize("service", ["api", "auth", "transcoder", "notifier", "dispatcher"])
def test_local_defaults_do_not_count_as_production_settings(service):
    """Every default is the local stack's (127.0.0.1, idrl-local...): production with only
    ENVIRONMENT set names everything its service needs."""
    started = subprocess.run(
        entry_point(service, free_port()),
        env=clean_environment(ENVIRONMENT="production"),
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert started.returncode != 0
    assert "INSTANCE_CONNECTION_NAME or DATABASE_URL" in started.stderr, started.stderr


def production_environment(
    settings: Settings, pubsub_emulator_host: str, storage_emulator_host: str, **extra
):
    """A complete production environment aimed at the test's database and emulators."""
    names = (
        "google_cloud_project",
        "uploads_bucket",
        "clips_bucket",
        "topic_video_tasks",
        "topic_task_events",
        "subscription_transcoder",
        "subscription_notifier",
    )
    variables = {name.upper(): getattr(settings, name) for name in names}
    return clean_environment(
        ENVIRONMENT="production",
        DATABASE_URL=settings.database_url,
        PUBSUB_EMULATOR_HOST=pubsub_emulator_host,
        STORAGE_EMULATOR_HOST=storage_emulator_host,
        PUBLIC_BASE_URL="https://videos.example",
        **variables,
        **extra,
    )


def json_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.mark.parametrize("service", ["transcoder", "notifier"])
def test_a_complete_production_worker_runs_and_logs_json_lines(
    service, settings, pubsub_emulator_host, storage_emulator_host, tmp_path
):
    env = production_environment(settings, pubsub_emulator_host, storage_emulator_host)
    process = ManagedProcess(
        service, entry_point(service, 0), log_path=tmp_path / f"{service}.log", env=env, cwd=PROJECT_ROOT
    ).start()
    try:
        assert wait_until(
            lambda: any(line["message"].startswith("pulling") for line in json_lines(process.log_path)),
            timeout=60,
        ), process.log_excerpt()
    finally:
        process.stop()
    pulling = next(line for line in json_lines(process.log_path) if line["message"].startswith("pulling"))
    assert pulling["severity"] == "INFO" and pulling["service"] == service


def test_complete_production_gunicorn_serves_and_its_workers_log_json_lines(
    settings, pubsub_emulator_host, storage_emulator_host, signing_key_pem, tmp_path
):
    port = free_port()
    env = production_environment(
        settings, pubsub_emulator_host, storage_emulator_host, TOKEN_SIGNING_KEY=signing_key_pem
    )
    process = ManagedProcess(
        "auth", entry_point("auth", port), log_path=tmp_path / "auth.log", env=env, cwd=PROJECT_ROOT
    ).start()
    try:
        process.wait_ready(http_probe(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=30).status_code == 200
    finally:
        process.stop()
    keys = [line for line in json_lines(process.log_path) if line["message"] == "token keys"]
    assert keys and keys[0]["service"] == "auth" and keys[0]["severity"] == "INFO", process.log_excerpt()


def test_creating_the_apps_leaves_the_process_logging_as_it_was(settings):
    from services.api import close_app
    from services.api import create_app as create_api
    from services.auth import create_app as create_auth

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    create_auth(settings)
    api = create_api(settings.model_copy(update={"outbox_relay_enabled": False}))
    close_app(api)
    assert root.handlers == handlers and root.level == level


def test_caplog_sees_what_an_app_logs(settings, caplog):
    from services.auth import create_app

    with caplog.at_level(logging.INFO, logger="services.auth"):
        create_app(settings)
    assert [record.getMessage() for record in caplog.records if record.name == "services.auth"] == [
        "token keys"
    ]
