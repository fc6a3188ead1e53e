"""``python -m services.transcoder``: the worker process.

SIGTERM (and SIGINT) start a drain: stop pulling, let running clips finish within
``drain_grace_seconds``, hand back what did not, exit 0.
"""

from __future__ import annotations

from services.transcoder.worker import Worker
from shared.db import dispose_engine, get_engine
from shared.pubsub import Publisher, stop_on_signals
from shared.startup import start_process
from shared.storage import create_client


def main() -> int:
    settings = start_process("transcoder")
    shutdown = stop_on_signals()
    worker = Worker(
        settings,
        engine=get_engine(settings),
        storage_client=create_client(),
        publisher=Publisher(settings),
    )
    try:
        worker.run(shutdown)
    finally:
        dispose_engine()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
