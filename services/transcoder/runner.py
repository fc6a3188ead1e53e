"""Run one ffmpeg command: wall-clock limit, ``-progress`` parsing, stop on request.

ffmpeg writes ``key=value`` blocks to stdout (``-progress pipe:1``); each block ends with
``progress=continue|end`` and carries ``out_time_us``. A reader thread turns them into
``on_progress(seconds_written)`` calls. stderr is kept as a short ring of lines, so a
source that makes ffmpeg complain endlessly cannot fill memory or disk.

Each ffmpeg and ffprobe starts under a memory limit (RLIMIT_AS, set by util-linux's
``prlimit`` before it execs the program), so a source that makes one run allocate
without end fails that run alone, not the worker and the other task beside it. A
picture the decoder refuses as larger than the limit (``-max_pixels``) stops the run at
once: ffmpeg itself would skip the frame and go on, making a clip of what is left.
"""

from __future__ import annotations

import collections
import logging
import re
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
from services.transcoder.hardening import DecodeLimits

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.1
_STDERR_LINES = 40
# How much of what ffmpeg said a failure reason and its log line keep (the end of it).
_DETAIL_CHARS = 500
# ffmpeg errors that say something about this machine, not about the source.
_MACHINE_ERRORS = ("No space left on device", "Cannot allocate memory", "Too many open files")
# How an allocation refused by RLIMIT_AS shows: libav's errno text (EAGAIN is a thread
# whose stack could not be mapped), x264's and the C++ runtime's own.
_MEMORY_ERRORS = (
    "Cannot allocate memory",
    "Resource temporarily unavailable",
    "malloc of size",
    "Out of memory",
    "std::bad_alloc",
)
# libavutil's words for a picture over -max_pixels.
_OVERSIZED_PICTURE = re.compile(r"Picture size (\d+)x(\d+) exceeds specified max pixel count")


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
_PRLIMIT = shutil.which("prlimit")


def launch_prefix(memory_bytes: int) -> list[str]:
    """What goes before an ffmpeg or ffprobe command line: the parent-death launcher,
    and ``prlimit`` capping the address space at ``memory_bytes`` (0: no cap)."""
    if memory_bytes <= 0:
        return list(_LAUNCHER)
    if _PRLIMIT is None:
        # util-linux is part of every Debian system, the image's included: a missing
        # prlimit is a broken machine, and running without the limit would hide it.
        raise TransientFailure("this machine cannot limit ffmpeg's memory (prlimit is missing)")
    return [*_LAUNCHER, _PRLIMIT, f"--as={memory_bytes}:{memory_bytes}", "--"]


def hit_memory_limit(returncode: int, stderr: str, memory_bytes: int) -> bool:
    """Whether a failed run under a memory limit of ``memory_bytes`` ran out of it: an
    allocation refused, or the crash of a library that does not check for one."""
    return memory_bytes > 0 and (returncode < 0 or any(marker in stderr for marker in _MEMORY_ERRORS))


def memory_reason(memory_bytes: int) -> str:
    """What a task's owner is told when a run on the source hit the memory limit."""
    return f"decoding the source needs more than the {memory_bytes / 2**20:.0f} MiB of memory a clip may use"


def oversized_picture(text: str) -> str | None:
    """The size (``"16000x16000"``) of a picture ffmpeg's ``text`` says the decoder
    refused as over ``-max_pixels``; None when it says no such thing."""
    match = _OVERSIZED_PICTURE.search(text)
    return f"{match.group(1)}x{match.group(2)}" if match else None


def run_ffmpeg(
    args: list[str],
    *,
    timeout: float,
    limits: DecodeLimits = DecodeLimits(),
    on_progress: Callable[[float], None] | None = None,
    stop: StopSignal | None = None,
    activity: str = "making a clip",
) -> list[str]:
    """Run ``args`` to completion, its address space capped at ``limits.memory_bytes``;
    the last lines it wrote to stderr (what a filter printed as the run ended).
    ``activity`` names the run in the reason a task's owner reads when it overruns.

    Raises :class:`ProcessingStopped` when ``stop`` is set (ffmpeg is killed at once),
    :class:`PermanentFailure` when the wall-clock limit passes (a source within the
    limits never needs that long), the decoder meets a picture over its size limit, the
    run hits the memory limit, or ffmpeg exits with an error (the source cannot be
    decoded), :class:`TransientFailure` when the error is the machine's (disk full).
    """
    stderr_tail: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
    refused: list[str] = []  # the size of a picture the decoder refused
    memory_bytes = limits.memory_bytes
    process = subprocess.Popen(
        [*launch_prefix(memory_bytes), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    readers = [
        threading.Thread(target=_read_progress, args=(process.stdout, on_progress), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stderr, stderr_tail, refused), daemon=True),
    ]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None:
            if stop is not None and stop.is_set():
                _kill(process)
                raise ProcessingStopped(stop.why or "stopped")
            if refused:
                _kill(process)
                break
            if time.monotonic() > deadline:
                _kill(process)
                raise PermanentFailure(f"{activity} took longer than {timeout:.0f} s")
            if stop is not None:
                stop.wait(_POLL_SECONDS)
            else:
                time.sleep(_POLL_SECONDS)
    finally:
        if process.poll() is None:
            _kill(process)
        for reader in readers:
            reader.join(timeout=5)
    if refused:
        reason = (
            f"the source holds a {refused[0]} picture, over the {limits.max_width}x{limits.max_height} limit"
        )
        log.warning("ffmpeg stopped: %s", reason)
        raise PermanentFailure(reason)
    if process.returncode != 0:
        said = "; ".join(line for line in stderr_tail if line) or f"exit {process.returncode}"
        detail = said[-_DETAIL_CHARS:]
        log.warning("ffmpeg failed: %s", detail)
        if hit_memory_limit(process.returncode, detail, memory_bytes):
            # This source's demand: a retry would meet the same cap.
            raise PermanentFailure(memory_reason(memory_bytes))
        if any(marker in detail for marker in _MACHINE_ERRORS):
            raise TransientFailure(f"ffmpeg could not write its output ({detail_for_owner(said)})")
        raise PermanentFailure(f"the source could not be decoded ({detail_for_owner(said)})")
    return list(stderr_tail)


def detail_for_owner(said: str) -> str:
    """The end of what ffmpeg said, as a task's owner may read it: paths are cut to their
    file's name before the text is shortened, so no half of a local path is left."""
    return owner_detail(said)[-_DETAIL_CHARS:]


def _kill(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()


def _read_lines(stream, tail: collections.deque[str], refused: list[str]) -> None:
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").strip()
            tail.append(line[:300])
            if not refused and (size := oversized_picture(line)):
                refused.append(size)


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
