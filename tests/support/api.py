"""Helpers the api tests share: what reached Pub/Sub and Cloud Storage, the error shape."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema_rs
from google.api_core.exceptions import DeadlineExceeded
from google.cloud import pubsub_v1
from sqlalchemy import insert, update

from infra.local.fileserver import serve_wsgi
from infra.local.process import ManagedProcess, free_port
from services.api.openapi import SPEC
from shared import layout
from shared.config import Settings
from shared.events import Event, PartSubmitted, decode
from shared.pubsub import subscription_path
from shared.storage import storage_client
from shared.tables import clips, tasks

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE = "https://videos.league.example/runs/run.mp4"


def pull_events(
    settings: Settings,
    subscription: str,
    *,
    task_id: uuid.UUID | None = None,
    want: int = 1,
    timeout: float = 10.0,
) -> list[Event]:
    """Events on ``subscription`` (for ``task_id`` when given), acked; waits until
    ``want`` arrived or ``timeout`` seconds passed."""
    found: list[Event] = []
    deadline = time.monotonic() + timeout
    path = subscription_path(settings, subscription)
    with pubsub_v1.SubscriberClient() as subscriber:
        while len(found) < want and time.monotonic() < deadline:
            try:
                response = subscriber.pull(subscription=path, max_messages=50, timeout=2)
            except DeadlineExceeded:
                continue
            if response.received_messages:
                subscriber.acknowledge(
                    subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
                )
            for received in response.received_messages:
                event = decode(received.message.data, dict(received.message.attributes))
                if task_id is None or event.task_id == task_id:
                    found.append(event)
    return found


def part_submitted(clips_bucket: str, task_id: uuid.UUID, owner_id: uuid.UUID, index: int, parts: int):
    """The PartSubmitted the worker that plans a task publishes for part ``index`` of
    ``parts`` (of 20 s each)."""
    return PartSubmitted(
        task_id=task_id,
        owner_id=owner_id,
        index=index,
        start=(index - 1) * 20.0,
        duration=20.0,
        seek_to=(index - 1) * 20.0,
        segment=f"gs://{clips_bucket}/{layout.segment_object(task_id, index)}",
        parts_total=parts,
    )


def insert_tasks(
    engine,
    owner_id: uuid.UUID,
    count: int,
    *,
    start: datetime | None = None,
    deleted: bool = False,
    source_kind: str = "url",
) -> list[uuid.UUID]:
    """Tasks created one second apart, oldest first (an upload's source is its original's URI)."""
    start = start or datetime(2026, 1, 1, tzinfo=UTC)
    ids = [uuid.uuid4() for _ in range(count)]
    with engine.begin() as conn:
        conn.execute(
            insert(tasks),
            [
                {
                    "id": task_id,
                    "owner_id": owner_id,
                    "source_kind": source_kind,
                    "spec": {},
                    "source": SOURCE
                    if source_kind == "url"
                    else f"gs://uploads/{layout.upload_object(task_id)}",
                    "created_at": start + timedelta(seconds=n),
                    "deleted_at": start if deleted else None,
                }
                for n, task_id in enumerate(ids)
            ],
        )
    return ids


def store_processed(engine, settings, task_id: uuid.UUID, contents: list[bytes]) -> None:
    """What the transcoder and the notifier leave for a processed task: its clips stored
    under the layout's names (indexes from 0) and their rows."""
    bucket = storage_client().bucket(settings.clips_bucket)
    with engine.begin() as conn:
        conn.execute(
            update(tasks).where(tasks.c.id == task_id).values(status="processed", progress=100, attempt=1)
        )
        for index, content in enumerate(contents):
            name = layout.clip_object(task_id, index)
            bucket.blob(name).upload_from_string(content, content_type="video/mp4")
            conn.execute(
                insert(clips).values(
                    task_id=task_id,
                    index=index,
                    uri=f"gs://{settings.clips_bucket}/{name}",
                    duration_seconds=22.0,
                    size_bytes=len(content),
                )
            )


def object_names(bucket: str, prefix: str = "") -> list[str]:
    return [blob.name for blob in storage_client().list_blobs(bucket, prefix=prefix)]


def _json_schema(node):
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable`` becomes a ``null`` type."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _json_schema(value) for key, value in node.items() if key != "nullable"}
    if node.get("nullable") and "type" in node:
        converted["type"] = [node["type"], "null"]
    return converted


def openapi_validator(schema_name: str):
    """A validator of the api's OpenAPI document's schema ``schema_name``."""
    document = {"$ref": f"#/components/schemas/{schema_name}", "components": _json_schema(SPEC["components"])}
    return jsonschema_rs.validator_for(document)


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The platform's error shape with ``status`` (and ``code``), never a traceback."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in response.get_data(as_text=True)
    if code:
        assert body["error"]["code"] == code, body
    return body


def multipart(
    *parts: tuple[str, str | None, bytes], boundary: str = "idrl-test-boundary"
) -> tuple[bytes, str]:
    """A multipart/form-data body of ``(field, filename or None, content)`` parts and its
    content type, built in memory (the test client would spool large bodies to a file)."""
    body = bytearray()
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + content + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"


class JwksServer:
    """Serves a JWKS document the test changes as it goes, like a key rotation."""

    def __init__(self) -> None:
        self.keys: list[dict] = []
        self.fetches = 0
        self.url = ""
        self._serving = serve_wsgi(self._wsgi, name="jwks")

    def _wsgi(self, environ, start_response):
        self.fetches += 1
        body = json.dumps({"keys": self.keys}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def __enter__(self) -> JwksServer:
        self.url = self._serving.__enter__() + "/auth/.well-known/jwks.json"
        return self

    def __exit__(self, *exc_info) -> None:
        self._serving.__exit__(*exc_info)


def api_process(settings, jwks: JwksServer, log_path: Path, **overrides: str) -> tuple[ManagedProcess, str]:
    """The api under gunicorn on a free port, and its base URL."""
    port = free_port()
    env = (
        dict(os.environ)
        | {
            "PYTHONPATH": str(PROJECT_ROOT),
            "ENVIRONMENT": "test",
            "DATABASE_URL": settings.database_url,
            "UPLOADS_BUCKET": settings.uploads_bucket,
            "CLIPS_BUCKET": settings.clips_bucket,
            "TOPIC_VIDEO_TASKS": settings.topic_video_tasks,
            "TOPIC_TASK_EVENTS": settings.topic_task_events,
            "AUTH_JWKS_URL": jwks.url,
        }
        | overrides
    )
    process = ManagedProcess(
        "api",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            "services/api/gunicorn_config.py",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "gthread",
            "--threads",
            "2",
            "services.api:create_app()",
        ],
        log_path=log_path,
        env=env,
        cwd=PROJECT_ROOT,
        stop_timeout=15,
    )
    return process, f"http://127.0.0.1:{port}"
