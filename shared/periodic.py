"""A daemon thread that runs one round of background work every few seconds until it
is stopped: the api's outbox relay and its expired-upload sweep run on it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``each_round`` every ``interval`` seconds on a daemon thread named ``name``
    from :meth:`start` until :meth:`stop`. A round that raises is logged and the next
    one runs as planned: background work that stopped for good would strand what it
    looks after. An ``interval`` of 0 or less never starts the thread."""

    def __init__(self, name: str, interval: float, each_round: Callable[[], object]) -> None:
        self.name = name
        self.interval = interval
        self._round = each_round
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the round under way, waiting up to ``timeout`` seconds for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        """Run rounds until :meth:`stop` (the thread's body; callable directly in tests)."""
        while not self._stop.wait(self.interval):
            try:
                self._round()
            except Exception:  # noqa: BLE001 - see the class: the next round must still run
                log.exception("%s: a round failed; retrying next round", self.name)
