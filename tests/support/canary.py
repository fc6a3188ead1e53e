"""A FIFO canary for the hardening tests: a path no hardened reader may open (an HLS
playlist or ffconcat script names it); the test asks afterwards whether anything did.
Shared by the transcoder's integration tests and the security tests (``tests/`` is on
the import path through its conftest)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


class Canary:
    """A FIFO that no hardened reader opens: opening it for reading releases a writer
    blocked on it, which is how the test learns that something read it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path)
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._wait_for_reader, daemon=True)
        self._thread.start()

    def _wait_for_reader(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens the FIFO
        self._opened.set()
        with contextlib.suppress(BrokenPipeError):
            os.write(fd, b"canary\n")
        os.close(fd)

    def was_read(self, wait: float = 0.5) -> bool:
        read = self._opened.wait(wait)
        if not read:  # release the writer thread
            os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
            self._thread.join(5)
        return read
