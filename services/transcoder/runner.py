"""Run one ffmpeg command: wall-clock limit, ``-progress`` parsing, stop on request.

ffmpeg writes ``key=value`` blocks to stdout (``-progress pipe:1``); each block ends with
``progress=continue|end`` and carries ``out_time_us``. A reader thread turns them into
``on_progress(seconds_written)`` calls. stderr is kept as a short ring of lines, so a
source that makes ffmpeg complain endlessly cannot fill memory or disk.
"""

from __future__ import annotations

import collections
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Callable

from services.transcoder.errors import (
    PermanentFailure,
    ProcessingStopped,
    TransientFailure,
    owner_detail,
)

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
_STDERR_LINES = 40
# ffmpeg errors that say something about this machine, not about the source.
_MACHINE_ERRORS = ("No space left on device", "Cannot allocate memory", "Too many open files")


class StopSignal:
    """Set from another thread to stop the current run (cancellation or drain)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.why: str | None = None

    def set(self, why: str) -> None:
        if not self._event.is_set():
            self.why = why
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def raise_if_set(self) -> None:
        if self._event.is_set():
            raise ProcessingStopped(self.why or "stopped")


def _parent_death_prefix() -> list[str]:
    """A launcher that makes the kernel SIGKILL ffmpeg if the worker dies, so a killed
    worker leaves no orphan encoding. util-linux's ``setpriv`` sets it and execs ffmpeg;
    a ``preexec_fn`` could not be used: it forces a plain fork(), whose gRPC fork
    handlers break the child of a process with live Pub/Sub streams."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


_LAUNCHER = _parent_death_prefix()


def run_ffmpeg(
    args: list[str],
    *,
    timeout: float,
    on_progress: Callable[[float], None] | None = None,
    stop: StopSignal | None = None,
) -> None:
    """Run ``args`` to completion.

    Raises :class:`ProcessingStopped` when ``stop`` is set (ffmpeg is killed at once),
    :class:`PermanentFailure` when the wall-clock limit passes (a source within the
    limits never needs that long) or ffmpeg exits with an error (the source cannot be
    decoded), :class:`TransientFailure` when the error is the machine's (disk full).
    """
    stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    process = subprocess.Popen(
        [*_LAUNCHER, *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    readers = [
        threading.Thread(target=_read_progress, args=(process.stdout, on_progress), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stderr, stderr_tail), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None:
            if stop is not None and stop.is_set():
                _kill(process)
                raise ProcessingStopped(stop.why or "stopped")
            if time.monotonic() > deadline:
                _kill(process)
                raise PermanentFailure(f"making a clip took longer than {timeout:.0f} s")
            if stop is not None:
                stop.wait(_POLL_SECONDS)
            else:
                time.sleep(_POLL_SECONDS)
    finally:
        if process.poll() is None:
            _kill(process)
        for reader in readers:
            reader.join(timeout=5)
    if process.returncode != 0:
        detail = "; ".join(line for line in stderr_tail if line)[-500:] or f"exit {process.returncode}"
        log.warning("ffmpeg failed: %s", detail)
        if any(marker in detail for marker in _MACHINE_ERRORS):
            raise TransientFailure(f"ffmpeg could not write its output ({owner_detail(detail)})")
        raise PermanentFailure(f"the source could not be decoded ({owner_detail(detail)})")


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def _read_lines(stream, tail: collections.deque[str]) -> None:
    with stream:
        for raw in stream:
            tail.append(raw.decode("utf-8", "replace").strip()[:300])


def _read_progress(stream, on_progress: Callable[[float], None] | None) -> None:
    with stream:
        out_time_us: int | None = None
        for raw in stream:
            key, _, value = raw.decode("ascii", "replace").strip().partition("=")
            if key == "out_time_us":
                try:
                    out_time_us = int(value)
                except ValueError:
                    out_time_us = None  # "N/A" before the first frame
            elif key == "progress" and on_progress is not None and out_time_us is not None:
                try:
                    on_progress(max(0.0, out_time_us / 1_000_000))
                except Exception:
                    # Keep draining stdout, or ffmpeg would block on a full pipe.
                    log.exception("progress callback failed; further progress dropped")
                    on_progress = None
