"""The local stack itself: the emulators and PostgreSQL really answer, and stopping
the launcher (Ctrl-C on `make up`, or `make down`) leaves no process and no port."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import jwt
import pg8000.native
import psutil
import pytest
import requests
import sqlalchemy
from google.api_core.exceptions import NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage

from infra.local import StackConfig, free_port, port_bindable, start_postgres, start_pubsub, start_storage
from infra.local.process import group_members, wait_until
from infra.local.stack_config import LOCAL_DB_ROLE, PROJECT_ROOT
from shared.config import Settings
from shared.pubsub import subscription_path, topic_path
from shared.storage import storage_client

HOST = "127.0.0.1"
PORT_VARIABLES = ("GATEWAY_PORT", "AUTH_PORT", "API_PORT", "POSTGRES_PORT", "PUBSUB_PORT", "STORAGE_PORT")


# --- the emulators and PostgreSQL answer ----------------------------------------------------


def test_pubsub_publish_streaming_pull_ack_and_nack(settings: Settings) -> None:
    publisher = pubsub_v1.PublisherClient()
    topic = topic_path(settings, settings.topic_video_tasks)
    for body in (b"first", b"second", b"third"):
        publisher.publish(topic, body, event_type="TaskSubmitted", task_id=body.decode()).result(timeout=30)

    deliveries: dict[bytes, int] = {}
    acked: list[tuple[bytes, dict[str, str]]] = []
    all_acked = threading.Event()
    lock = threading.Lock()

    def on_message(message: pubsub_v1.subscriber.message.Message) -> None:
        with lock:
            deliveries[message.data] = deliveries.get(message.data, 0) + 1
            if message.data == b"second" and deliveries[message.data] == 1:
                message.nack()  # handed back: must come again
                return
            acked.append((message.data, dict(message.attributes)))
            message.ack()
            if len(acked) == 3:
                all_acked.set()

    with pubsub_v1.SubscriberClient() as subscriber:
        future = subscriber.subscribe(
            subscription_path(settings, settings.subscription_transcoder),
            on_message,
            flow_control=pubsub_v1.types.FlowControl(max_messages=2),
        )
        finished = all_acked.wait(timeout=60)
        future.cancel()
        future.result()

    assert finished, f"acked {acked}, deliveries {deliveries}"
    assert sorted(data for data, _ in acked) == [b"first", b"second", b"third"]
    assert all(
        attributes == {"event_type": "TaskSubmitted", "task_id": data.decode()} for data, attributes in acked
    )
    assert deliveries[b"second"] == 2


def test_pubsub_unary_pull_modify_ack_deadline_and_subscription_lifecycle(settings: Settings) -> None:
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(topic_path(settings, settings.topic_task_events), b"event").result(timeout=30)
    extra = subscription_path(settings, f"extra-{uuid.uuid4().hex[:8]}")

    with pubsub_v1.SubscriberClient() as subscriber:
        name = subscription_path(settings, settings.subscription_notifier)
        pulled = subscriber.pull(subscription=name, max_messages=5, timeout=30).received_messages
        assert [received.message.data for received in pulled] == [b"event"]
        # Deadline 0 hands the message back at once: the next pull gets it again.
        subscriber.modify_ack_deadline(subscription=name, ack_ids=[pulled[0].ack_id], ack_deadline_seconds=0)
        again = subscriber.pull(subscription=name, max_messages=5, timeout=30).received_messages
        assert [received.message.data for received in again] == [b"event"]
        subscriber.acknowledge(subscription=name, ack_ids=[again[0].ack_id])

        created = subscriber.create_subscription(
            name=extra, topic=topic_path(settings, settings.topic_task_events), ack_deadline_seconds=30
        )
        assert (
            subscriber.get_subscription(subscription=extra).ack_deadline_seconds
            == created.ack_deadline_seconds
            == 30
        )
        subscriber.delete_subscription(subscription=extra)
        with pytest.raises(NotFound):
            subscriber.get_subscription(subscription=extra)


def test_storage_emulator_writes_reads_lists_and_deletes_objects(settings: Settings) -> None:
    bucket = storage_client().bucket(settings.uploads_bucket)
    payload = os.urandom(300 * 1024)  # above one resumable chunk boundary (256 KiB)
    blob = bucket.blob("runs/athlete-1/source.mp4")
    blob.upload_from_string(payload, content_type="video/mp4")

    assert bucket.blob("runs/athlete-1/source.mp4").download_as_bytes() == payload
    assert [item.name for item in storage_client().list_blobs(settings.uploads_bucket, prefix="runs/")] == [
        "runs/athlete-1/source.mp4"
    ]
    blob.delete()
    assert list(storage_client().list_blobs(settings.uploads_bucket)) == []


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_its_own_migrated_database(database_url: str, attempt: int) -> None:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.begin() as connection:
            assert connection.execute(sqlalchemy.text("SELECT version_num FROM alembic_version")).scalar_one()
            # Created by whichever attempt runs first; the other must not see it.
            assert not connection.execute(sqlalchemy.text("SELECT to_regclass('isolation_marker')")).scalar()
            connection.execute(sqlalchemy.text("CREATE TABLE isolation_marker (attempt int)"))
            connection.execute(
                sqlalchemy.text("INSERT INTO isolation_marker VALUES (:attempt)"), {"attempt": attempt}
            )
            assert (
                connection.execute(sqlalchemy.text("SELECT sum(attempt) FROM isolation_marker")).scalar_one()
                == attempt
            )
    finally:
        engine.dispose()


def test_the_local_role_can_force_drop_a_database_another_role_is_connected_to(postgres_url: str) -> None:
    # The test fixtures drop each test's database WITH (FORCE); an autovacuum worker
    # (no role of ours) may be in it. Another role's session stands in for it here.
    url = sqlalchemy.make_url(postgres_url)
    if url.username != LOCAL_DB_ROLE:
        pytest.skip("DATABASE_URL or a container: not the local stack's own cluster")
    name, other = f"idrl_force_{uuid.uuid4().hex[:8]}", f"idrl_other_{uuid.uuid4().hex[:8]}"
    superuser = sqlalchemy.create_engine(
        url.set(username="postgres", password=None), isolation_level="AUTOCOMMIT"
    )
    role = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with superuser.connect() as connection:
            connection.execute(sqlalchemy.text(f"CREATE ROLE {other} LOGIN"))
        with role.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        intruder = pg8000.native.Connection(other, host=url.host, port=url.port, database=name, timeout=10)
        assert intruder.run("SELECT current_user") == [[other]]
        with role.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        try:
            with pytest.raises(pg8000.exceptions.InterfaceError):
                intruder.run("SELECT 1")  # its session was ended by the drop
        finally:
            with contextlib.suppress(pg8000.exceptions.InterfaceError, OSError):
                intruder.close()  # its Terminate message fails on the dead socket; the socket closes
        with role.connect() as connection:
            exists = connection.execute(
                sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            )
            assert exists.first() is None
    finally:
        with superuser.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(sqlalchemy.text(f"DROP ROLE IF EXISTS {other}"))
        superuser.dispose()
        role.dispose()


# --- stopping leaves nothing behind ---------------------------------------------------------


def _pids_of(pid: int) -> set[int]:
    """A process, its group and its descendants (postgres children lead their own groups)."""
    pids = {pid} | {member.pid for member in group_members(pid)}
    with contextlib.suppress(psutil.NoSuchProcess):
        pids |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
    return pids


def _alive(pids: set[int]) -> list[str]:
    alive = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(process.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A temporary folder the unprivileged postgres user can enter (pytest's are 0700)."""
    with tempfile.TemporaryDirectory(prefix="idrl-stack-test-") as path:
        os.chmod(path, 0o711)
        yield Path(path)


def test_stopping_each_component_leaves_no_process_and_no_bound_port(
    reachable_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StackConfig(
        state_dir=reachable_dir,
        postgres_dir=reachable_dir / "pg",
        postgres_port=free_port(),
        pubsub_port=free_port(),
        storage_port=free_port(),
        storage_in_memory=True,
    )
    postgres_url, postgres = start_postgres(config)
    pubsub_host, pstest = start_pubsub(config, "pstest")
    storage_host, gcs = start_storage(config)
    processes = [postgres, pstest, gcs]
    try:
        engine = sqlalchemy.create_engine(postgres_url)
        with engine.connect() as connection:
            assert connection.execute(sqlalchemy.text("SELECT 6 * 7")).scalar_one() == 42
        engine.dispose()

        # These components are not the session's: point the client libraries at them.
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_host)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", storage_host)
        publisher = pubsub_v1.PublisherClient()
        topic = publisher.create_topic(name="projects/idrl-local/topics/stop-check").name
        assert publisher.publish(topic, b"x").result(timeout=30)

        client = storage.Client(project="idrl-local", credentials=AnonymousCredentials())
        client.create_bucket("stop-check").blob("o").upload_from_string(b"y")
        assert client.bucket("stop-check").blob("o").download_as_bytes() == b"y"

        pids = set().union(*(_pids_of(process.pid) for process in processes))
        assert len(pids) > len(processes)  # postgres runs background workers
    finally:
        for process in processes:
            process.stop()

    assert _alive(pids) == []
    for port in (config.postgres_port, config.pubsub_port, config.storage_port):
        assert port_bindable(HOST, port), f"port {port} still bound"


def _launcher_env(state_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("DATABASE_URL", "PUBSUB_EMULATOR_HOST", "STORAGE_EMULATOR_HOST")
    }
    env |= {name: str(free_port()) for name in PORT_VARIABLES}
    env |= {
        "STACK_STATE_DIR": str(state_dir),
        "STACK_SERVICES": "auth",
        "PUBSUB_EMULATOR": "pstest",
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    return env | extra


def _start_launcher(env: dict[str, str], output: Path) -> subprocess.Popen[bytes]:
    with open(output, "wb") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "infra.local", "up"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 120
    while "local stack is up" not in output.read_text():
        if launcher.poll() is not None or time.monotonic() > deadline:
            launcher.kill()
            pytest.fail(f"`up` did not come up:\n{output.read_text()}")
        time.sleep(0.2)
    return launcher


def _recorded_pids(state_dir: Path) -> set[int]:
    state = json.loads((state_dir / "stack.json").read_text())
    return set().union(*(_pids_of(entry["pid"]) for entry in state["processes"]))


def _sign_up_and_log_in(base_url: str) -> None:
    user = {
        "username": "stackcheck",
        "email": "Stack.Check@league.org",
        "password": "Checked123",
        "password_2": "Checked123",
    }
    assert requests.post(f"{base_url}/auth/signup", json=user, timeout=30).status_code == 201
    login = requests.post(
        f"{base_url}/auth/login", json={"email": user["email"], "password": user["password"]}, timeout=30
    )
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    keys = jwt.PyJWKSet.from_dict(requests.get(f"{base_url}/auth/.well-known/jwks.json", timeout=30).json())
    kid = jwt.get_unverified_header(token)["kid"]
    defaults = Settings()
    claims = jwt.decode(
        token,
        next(key for key in keys.keys if key.key_id == kid).key,
        algorithms=["EdDSA"],
        audience=defaults.token_audience,
        issuer=defaults.token_issuer,
    )
    assert claims["sub"]


def test_ctrl_c_on_up_stops_the_whole_stack(reachable_dir: Path) -> None:
    env = _launcher_env(reachable_dir)
    launcher = _start_launcher(env, reachable_dir / "up.out")
    try:
        base_url = f"http://{HOST}:{env['GATEWAY_PORT']}"
        _sign_up_and_log_in(base_url)
        # The api is not part of this stack: the gateway answers in the platform's error shape.
        missing = requests.get(f"{base_url}/tasks", timeout=30)
        assert missing.status_code == 503
        assert missing.json()["error"]["code"] == "service_unavailable"
        pids = _recorded_pids(reachable_dir)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=90) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)

    output = (reachable_dir / "up.out").read_text()
    assert "local stack stopped." in output, output
    assert _alive(pids) == []
    for name in PORT_VARIABLES:
        assert port_bindable(HOST, int(env[name])), f"{name} {env[name]} still bound"
    assert not (reachable_dir / "stack.json").exists()


def test_down_stops_a_stack_running_in_the_background(
    reachable_dir: Path, database_url: str, pubsub_emulator_host: str, storage_emulator_host: str
) -> None:
    # Given endpoints: only auth and the gateway are started, and `down` must stop just those.
    env = _launcher_env(
        reachable_dir,
        DATABASE_URL=database_url,
        PUBSUB_EMULATOR_HOST=pubsub_emulator_host,
        STORAGE_EMULATOR_HOST=storage_emulator_host,
    )
    launcher = _start_launcher(env, reachable_dir / "up.out")
    try:
        state = json.loads((reachable_dir / "stack.json").read_text())
        assert sorted(entry["name"] for entry in state["processes"]) == ["auth", "gateway"]
        pids = _recorded_pids(reachable_dir)
        down = subprocess.run(
            [sys.executable, "-m", "infra.local", "down"],
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert down.returncode == 0, down.stderr
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)

    assert _alive(pids) == []
    assert port_bindable(HOST, int(env["GATEWAY_PORT"])) and port_bindable(HOST, int(env["AUTH_PORT"]))
    # The given emulators are not the launcher's to stop.
    assert requests.get(f"{storage_emulator_host}/storage/v1/b?project=x", timeout=10).status_code == 200


@pytest.mark.e2e
def test_local_stack_fixture_routes_auth_and_api_through_its_gateway(local_stack) -> None:
    jwks = requests.get(f"{local_stack.base_url}/auth/.well-known/jwks.json", timeout=30)
    assert jwks.status_code == 200 and jwks.json()["keys"]
    health = requests.get(f"{local_stack.base_url}/healthz", timeout=30)
    assert health.status_code == 200, health.text
    # Its own database: the services run against exactly what the settings name.
    assert local_stack.settings.database_url == local_stack.stack.database_url
    assert local_stack.settings.uploads_bucket.startswith("idrl-uploads-")
    assert storage_client().bucket(local_stack.settings.clips_bucket).exists()


def test_components_stop_themselves_when_the_launcher_is_killed(reachable_dir: Path) -> None:
    # SIGKILL, a closed terminal, a test run cut short: no cleanup code runs, yet
    # nothing may keep running or keep a port.
    env = _launcher_env(reachable_dir)
    launcher = _start_launcher(env, reachable_dir / "up.out")
    pids = _recorded_pids(reachable_dir)
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait(timeout=30)
    try:
        assert wait_until(lambda: not _alive(pids), timeout=60), _alive(pids)
        for name in PORT_VARIABLES:
            assert wait_until(lambda name=name: port_bindable(HOST, int(env[name])), timeout=30), (
                f"{name} bound"
            )
    finally:
        for pid in pids:  # a failure here must not leave the machine littered
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
