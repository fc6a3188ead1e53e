"""Command line of the local stack (the Makefile calls it).

    python -m infra.local up            start everything, foreground; Ctrl-C stops it
    python -m infra.local down          stop a stack started in the background
    python -m infra.local build-pstest  build .local/bin/pstest if its source changed
    python -m infra.local migrate       migrate the local stack's database
    python -m infra.local provision     topics, subscriptions, buckets (reads the environment)
    python -m infra.local clean         delete the local state (cluster, objects, keys, logs, builds)

Configuration comes from environment variables; see StackConfig.from_environment.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
from types import FrameType

import psutil

from infra.local.emulators import build_pstest
from infra.local.gateway import web_root
from infra.local.postgres import postgres_fallback_dir
from infra.local.process import StartupError, group_members, kill_group, port_accepts, wait_until
from infra.local.stack import LocalStack
from infra.local.stack_config import SERVICES, StackConfig, run_migrations


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Stop(Exception):
    """SIGTERM (`make down`) and SIGHUP take the same way out as Ctrl-C."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop()


def _running_launcher(config: StackConfig) -> psutil.Process | None:
    try:
        state = json.loads(config.state_file.read_text())
        launcher = psutil.Process(state["launcher"]["pid"])
        if abs(launcher.create_time() - state["launcher"]["create_time"]) < 1:
            return launcher
    except (FileNotFoundError, json.JSONDecodeError, KeyError, psutil.NoSuchProcess):
        pass
    return None


def _finished(process: psutil.Process) -> bool:
    # Not our child: once it exits it may stay a zombie until its parent reaps it.
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _banner(stack: LocalStack) -> str:
    config = stack.config
    services = config.service_names()
    rows = [
        (
            "gateway",
            f"{stack.base_url}   (/auth/* -> auth, / and /assets/* -> web app, everything else -> api)",
        )
    ]
    if (web_root(config) / "index.html").exists():
        rows.insert(0, ("web app", f"{stack.base_url}/   (open it in a browser)"))
    else:
        rows.insert(0, ("web app", "not built: run `make web`"))
    for name in ("auth", "api"):
        if name in services:
            rows.append((name, f"http://{config.host}:{getattr(config, f'{name}_port')}"))
    if "transcoder" in services:
        rows.append(("transcoder", f"{config.transcoder_workers} worker(s) (TRANSCODER_WORKERS)"))
    if "notifier" in services:
        rows.append(("notifier", "pull runner on task-events"))
    rows += [
        ("PostgreSQL", f"DATABASE_URL={stack.database_url}"),
        (
            "Pub/Sub",
            f"PUBSUB_EMULATOR_HOST={stack.pubsub_emulator_host}"
            + (f"   ({stack.pubsub_kind})" if stack.pubsub_kind else "   (given)"),
        ),
        ("Storage", f"STORAGE_EMULATOR_HOST={stack.storage_emulator_host}"),
        ("signing key", str(config.signing_key_path)),
        ("logs", f"{config.logs_dir}/<name>.log"),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"  {name.ljust(width)}  {value}" for name, value in rows]
    not_started = [name for name in SERVICES if name not in services]
    if not_started:
        lines.append(
            f"  not started (left out by STACK_SERVICES, or no package yet): {', '.join(not_started)}"
        )
    return "\nIDRL local stack is up:\n" + "\n".join(lines) + "\nCtrl-C (or `make down`) stops it.\n"


def _loud(process_message: str) -> None:
    bar = "!" * 78
    say(f"\n{bar}\n{process_message}\n{bar}\n")


def up() -> int:
    config = StackConfig.from_environment()
    running = _running_launcher(config)
    if running is not None:
        say(f"a local stack is already running (pid {running.pid}); stop it with `make down`")
        return 1
    signal.signal(signal.SIGTERM, _raise_stop)
    signal.signal(signal.SIGHUP, _raise_stop)  # the terminal was closed
    # A shell without job control starts background commands with SIGINT ignored,
    # and Python then keeps ignoring it: Ctrl-C must always reach the launcher.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = LocalStack(config, report=say, record_state=True)
    say(f"starting the local stack (state in {config.state_dir}, logs in {config.logs_dir})")
    status = 0
    try:
        stack.start()
        say(_banner(stack))
        while True:
            time.sleep(1)
            for process in stack.newly_dead():
                _loud(
                    f"{process.name} (pid {process.pid}) EXITED UNEXPECTEDLY ({process.exit_description}); "
                    "the rest of the stack keeps running.\n"
                    f"{process.log_excerpt()}"
                )
    except (KeyboardInterrupt, _Stop):
        say("\nstopping the local stack ...")
    except StartupError as error:
        say(f"\nthe local stack did not start:\n{error}")
        status = 1
    finally:
        # Stopping must not be cut short by a second Ctrl-C: that would leave orphans.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        stack.stop()
    say("local stack stopped." if status == 0 else "everything that had started was stopped.")
    return status


def down() -> int:
    config = StackConfig.from_environment()
    try:
        state = json.loads(config.state_file.read_text())
    except FileNotFoundError:
        say("no local stack is recorded as running")
        return 0
    launcher = _running_launcher(config)
    if launcher is not None:
        say(f"stopping the local stack (launcher pid {launcher.pid}) ...")
        launcher.terminate()
        if not wait_until(lambda: _finished(launcher), timeout=120):
            say("the launcher did not stop within 120 s; killing what it started")
            launcher.kill()
    # Whatever outlived the launcher (killed with SIGKILL, say) is stopped here.
    leftovers = 0
    for recorded in state.get("processes", []):
        members = [
            member
            for member in group_members(recorded["pid"])
            if member.create_time() >= recorded["create_time"] - 1
        ]
        if members:
            leftovers += len(members)
            kill_group(recorded["pid"])
            wait_until(lambda pid=recorded["pid"]: not group_members(pid), timeout=10)
    if leftovers:
        say(f"killed {leftovers} process(es) left behind by the launcher")
    config.state_file.unlink(missing_ok=True)
    say("local stack stopped.")
    return 0


def clean() -> int:
    config = StackConfig.from_environment()
    running = _running_launcher(config)
    if running is not None:
        say(f"a local stack is running (pid {running.pid}); stop it first with `make down`")
        return 1
    for path in (postgres_fallback_dir(config.state_dir / "pg"), config.state_dir):
        if path.exists():
            shutil.rmtree(path)
            say(f"removed {path}")
    return 0


def provision() -> int:
    # Run by the launcher in a child process whose environment carries the emulator
    # hosts, so the launcher's own environment stays untouched.
    from shared.config import Settings
    from shared.pubsub import ensure_topology
    from shared.storage import ensure_buckets

    settings = Settings()
    ensure_topology(settings)
    ensure_buckets(settings)
    return 0


def migrate() -> int:
    config = StackConfig.from_environment()
    if not config.database_url and not port_accepts(config.host, config.postgres_port):
        say(
            f"no PostgreSQL on {config.host}:{config.postgres_port}: start the stack (`make up`) "
            "or set DATABASE_URL"
        )
        return 1
    try:
        run_migrations(config, config.database_url or config.local_database_url())
    except StartupError as error:
        say(str(error))
        return 1
    say("database migrated")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["up", "down", "build-pstest", "provision", "migrate", "clean"])
    command = parser.parse_args(argv).command
    if command == "build-pstest":
        try:
            say(f"pstest: {build_pstest(StackConfig())}")
        except StartupError as error:
            say(str(error))
            return 1
        return 0
    return {"up": up, "down": down, "provision": provision, "migrate": migrate, "clean": clean}[command]()


if __name__ == "__main__":
    sys.exit(main())
