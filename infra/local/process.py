"""Child processes of the local stack: start in their own process group, wait until
they serve, stop them with nothing left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import psutil
import requests

Probe = Callable[[], bool]


class StartupError(RuntimeError):
    """A component exited or did not become ready in time."""


class ManagedProcess:
    """One component of the stack, run as the leader of its own process group.

    Its own group (a new session) keeps Ctrl-C in the terminal away from it, so the
    launcher decides the stop order, and lets the stop reach every descendant
    (gunicorn workers, the Java process behind gcloud, postgres backends).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
        signal_group: bool = True,
        stop_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.signal_group = signal_group
        self.stop_timeout = stop_timeout
        self.popen: subprocess.Popen[bytes] | None = None
        self.create_time: float | None = None
        self.stopping = False
        self._log_offset = 0

    def __repr__(self) -> str:
        return f"<ManagedProcess {self.name} pid={self.pid}>"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen else None

    @property
    def exit_description(self) -> str:
        code = self.returncode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    @property
    def died_unexpectedly(self) -> bool:
        return self.popen is not None and not self.stopping and self.popen.poll() is not None

    def start(self) -> ManagedProcess:
        # Also a restart after stop(): from now on an exit is unexpected again.
        self.stopping = False
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_offset = log.tell()  # excerpts show this run only
            started = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"\n=== {started} start {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            # Popen keeps its own copy of the descriptor; closing ours is safe.
            argv, user = _launch(self.argv, self.stop_signal, self.user)
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=user,
                group=user,
                # Dropping to another user must also drop root's supplementary groups.
                extra_groups=[] if user else None,
            )
        self.create_time = psutil.Process(self.popen.pid).create_time()
        return self

    def wait_ready(self, probe: Probe, timeout: float = 60.0, interval: float = 0.1) -> None:
        """Return once ``probe`` succeeds; raise StartupError if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.running:
                raise StartupError(
                    f"{self.name} exited during start-up ({self.exit_description}).\n{self.log_excerpt()}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise StartupError(f"{self.name} was not ready after {timeout:.0f} s.\n{self.log_excerpt()}")
            time.sleep(interval)

    def log_excerpt(self, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                tail = log.read().decode(errors="replace").splitlines()[-lines:]
        except FileNotFoundError:
            tail = []
        body = "\n".join(f"    {line}" for line in tail)
        return f"  last lines of {self.log_path}:\n{body}"

    def send_stop(self) -> None:
        """Ask the process (group) to stop; pair with ``finish_stop``."""
        self.stopping = True
        if not self.running:
            return
        assert self.popen is not None
        try:
            if self.signal_group:
                os.killpg(self.popen.pid, self.stop_signal)
            else:
                self.popen.send_signal(self.stop_signal)
        except ProcessLookupError:
            pass

    def finish_stop(self) -> None:
        """Wait for the stop; SIGKILL the group after ``stop_timeout``; reap stragglers."""
        if self.popen is None:
            return
        try:
            self.popen.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            kill_group(self.popen.pid)
            self.popen.wait()
        # Descendants that outlived their leader (e.g. the JVM under gcloud's wrapper).
        kill_group(self.popen.pid)
        wait_until(lambda: not group_members(self.popen.pid), timeout=10.0)

    def stop(self) -> None:
        self.send_stop()
        self.finish_stop()


def _launch(argv: list[str], stop_signal: signal.Signals, user: str | None) -> tuple[list[str], str | None]:
    """``argv`` run so that it gets ``stop_signal`` if the launching process dies, as
    ``user``; and the user Popen must still switch to (None when setpriv does it).

    A child in its own session outlives a launcher killed outright (SIGKILL, a closed
    terminal, a test run cut short by `timeout`); the kernel's parent-death signal
    makes it stop itself instead of holding its port forever. setpriv (util-linux)
    sets it, switches to ``user`` with no supplementary groups, and then executes the
    real program in the same process. Switching there rather than in Popen keeps the
    child made with vfork(): Popen forks to switch users, which runs the launcher's
    fork handlers in the child, and gRPC's (any Pub/Sub client in the process) can
    crash it before it executes (seen as PostgreSQL "killed by SIGSEGV" at a restart).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return argv, user
    identity = ["--reuid", user, "--regid", user, "--clear-groups"] if user else []
    return [setpriv, *identity, "--pdeathsig", stop_signal.name.removeprefix("SIG"), "--", *argv], None


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes of a process group.

    Zombies are ignored: in a container whose init does not reap, an orphan's zombie
    stays in the table without holding a port or any other resource.
    """
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return members


def stop_all(processes: Sequence[ManagedProcess]) -> None:
    """Stop processes together: signal them all, then wait for each."""
    for process in processes:
        process.send_stop()
    for process in processes:
        process.finish_stop()


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


_given_ports: set[int] = set()
_given_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's choice), and never one this
    process was given before: ports are picked before anything binds them, so the kernel
    may well offer the same free port to two picks in a row."""
    with _given_ports_lock:
        while True:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = sock.getsockname()[1]
            if port not in _given_ports:
                _given_ports.add(port)
                return port


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True when a new listener could bind the port (nothing holds it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this machine
        return False
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def tcp_probe(host: str, port: int) -> Probe:
    return lambda: port_accepts(host, port)


def http_probe(url: str, accept: Callable[[int], bool] = lambda status: status < 500) -> Probe:
    def probe() -> bool:
        try:
            response = requests.get(url, timeout=2)
        except requests.RequestException:
            return False
        return accept(response.status_code)

    return probe


# --- memory (tests and benchmarks) ------------------------------------------------------------


def tree_rss(root: psutil.Process) -> int:
    """Resident memory of ``root`` and all its descendants, in bytes (a process that ends
    meanwhile counts nothing)."""
    total = 0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


class RssSampler:
    """The resident memory of a process — with its descendants when ``tree`` — sampled
    every ``interval`` s in a thread while the ``with`` block runs: ``samples`` (the
    first taken at construction) and their ``peak``."""

    def __init__(self, process: psutil.Process, *, tree: bool = False, interval: float = 0.02) -> None:
        self.process = process
        self.tree = tree
        self.interval = interval
        self.samples = [self.rss()]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss(self) -> int:
        return tree_rss(self.process) if self.tree else self.process.memory_info().rss

    @property
    def peak(self) -> int:
        return max(self.samples)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(self.rss())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.rss())
