"""The Pub/Sub and Cloud Storage emulators of the local stack."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from infra.local.process import ManagedProcess, StartupError, http_probe, tcp_probe
from infra.local.stack_config import StackConfig, base_environment

# --- Pub/Sub --------------------------------------------------------------------------


def build_pstest(config: StackConfig) -> Path:
    """Build `.local/bin/pstest` from infra/local/pstest; a no-op when the source is unchanged."""
    source_dir = config.project_root / "infra" / "local" / "pstest"
    binary = config.bin_dir / "pstest"
    stamp = config.bin_dir / "pstest.sha256"
    digest = hashlib.sha256()
    for source in sorted(source_dir.glob("*.go")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return binary
    go = shutil.which("go")
    if go is None:
        raise StartupError("`go` not found: run `make install` (golang-go, golang-google-cloud-dev)")
    config.bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | {
        # GOPATH mode against the distribution's Go sources: no module download.
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(config.project_root / ".local" / "go-cache"),
        "GOFLAGS": "",
    }
    partial = config.bin_dir / f"pstest.{os.getpid()}.partial"
    build = subprocess.run(
        [go, "build", "-o", str(partial), "."],
        cwd=source_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if build.returncode != 0:
        partial.unlink(missing_ok=True)
        raise StartupError(f"building pstest failed:\n{build.stdout}{build.stderr}")
    os.replace(partial, binary)
    stamp.write_text(digest.hexdigest() + "\n")
    return binary


def _gcloud_pubsub_emulator_installed() -> bool:
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        return False
    sdk_root = Path(gcloud).resolve().parent.parent
    return (sdk_root / "platform" / "pubsub-emulator").is_dir()


def pubsub_emulator_kind(choice: str) -> str:
    """`pstest` or `gcloud`: the choice made, or for `auto` the gcloud emulator where installed."""
    if choice == "auto":
        return "gcloud" if _gcloud_pubsub_emulator_installed() else "pstest"
    return choice


def start_pubsub(config: StackConfig, kind: str | None = None) -> tuple[str, ManagedProcess]:
    """A Pub/Sub emulator on ``config.pubsub_port``; returns its PUBSUB_EMULATOR_HOST value."""
    kind = pubsub_emulator_kind(kind or config.pubsub_emulator)
    host, port = config.host, config.pubsub_port
    env = base_environment(config)
    if kind == "pstest":
        argv: list[object] = [build_pstest(config), "-host", host, "-port", port]
    else:
        data_dir = config.state_dir / "pubsub"
        data_dir.mkdir(parents=True, exist_ok=True)
        project = config.settings.get("google_cloud_project", env.get("GOOGLE_CLOUD_PROJECT", "idrl-local"))
        argv = [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={host}:{port}",
            f"--data-dir={data_dir}",
            f"--project={project}",
        ]
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
    process = ManagedProcess(
        f"pubsub-{kind}", argv, log_path=config.logs_dir / "pubsub.log", env=env, cwd=config.project_root
    ).start()
    try:
        process.wait_ready(tcp_probe(host, port), timeout=90)
    except BaseException:
        process.stop()
        raise
    return f"{host}:{port}", process


# --- Cloud Storage --------------------------------------------------------------------


def start_storage(config: StackConfig) -> tuple[str, ManagedProcess]:
    """The Cloud Storage emulator; returns its STORAGE_EMULATOR_HOST value.

    On disk under the state folder unless ``storage_in_memory``, so objects survive a
    restart exactly as long as the PostgreSQL rows that point at them.
    """
    host, port = config.host, config.storage_port
    env = base_environment(config)
    argv: list[object] = [
        config.python,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        host,
        "--port",
        port,
    ]
    if config.storage_in_memory:
        argv.append("--in-memory")
    else:
        storage_dir = config.state_dir / "storage"
        storage_dir.mkdir(parents=True, exist_ok=True)
        env["STORAGE_BASE"] = str(storage_dir)
        env["STORAGE_DIR"] = "objects"
    process = ManagedProcess(
        "storage", argv, log_path=config.logs_dir / "storage.log", env=env, cwd=config.project_root
    ).start()
    endpoint = f"http://{host}:{port}"
    try:
        process.wait_ready(http_probe(f"{endpoint}/storage/v1/b?project=probe"), timeout=60)
    except BaseException:
        process.stop()
        raise
    return endpoint, process
