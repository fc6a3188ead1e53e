"""Entry module of the notifier's Cloud Function source archive.

The Python runtime loads `main.py` from the root of the archive; the handler lives in
`services/notifier/main.py` beside the `shared` package it imports, both copied into the
archive with their repository paths (notifier.tf), so this file only re-exports it.
"""

from services.notifier.main import on_task_event

__all__ = ["on_task_event"]
