"""``python -m services.notifier``: the local pull runner (see ``runner``)."""

from services.notifier.main import on_task_event, settings
from services.notifier.runner import run
from shared.db import dispose_engine

try:
    run(settings, on_task_event)
finally:
    dispose_engine()
