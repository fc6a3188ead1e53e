"""What every entry point does first: read the settings, stop if production lacks any
it needs, and send the process's log lines to stdout as JSON.

Entry points only (gunicorn's configuration, the worker's and the notifier's
``__main__``, the Cloud Function module): an app factory leaves the process's logging
to whoever embeds it.

Under gunicorn each HTTP service's ``gunicorn_config.py`` calls :func:`start_process`.
gunicorn reads that file in its master process, before any worker starts, so a
production process missing a setting stops there, once, with the names and no
traceback (failing in ``create_app`` instead, each worker would exit and be replaced),
and the JSON logging set up there is inherited by the workers.
"""

from __future__ import annotations

from shared.config import Settings, get_settings
from shared.logging import configure_logging


def start_process(service: str) -> Settings:
    """The checked settings of ``service``, with JSON logging set up for the process.

    Raises SystemExit naming the missing settings when production lacks any.
    """
    settings = get_settings()
    settings.require_production(service)
    configure_logging(service, settings.log_level)
    return settings


# gunicorn drains at most this much of a body the application left unread (its parser's
# _DRAIN_MAX_BYTES) before it reuses a connection; past it, it closes the connection.
GUNICORN_DRAIN_BYTES = 64 * 1024


def close_after_large_bodies(worker, req) -> None:
    """gunicorn ``pre_request`` hook: answer a request whose body may be larger than
    gunicorn drains with ``Connection: close``.

    A refused body (413, 415, 401 before an upload is read) is left unread. gunicorn
    announces keep-alive, then finds the rest too large to drain and closes the
    connection; the gateway or load balancer, told it could reuse it, sends the next
    request on it and gets nothing back (nginx: "upstream prematurely closed
    connection", a 502 it never retries for a POST). Announcing the close up front lets
    the proxy open a new connection instead.
    """
    worker.log.debug("%s %s", req.method, req.path)
    for name, value in req.headers:
        if name == "TRANSFER-ENCODING" or (
            name == "CONTENT-LENGTH" and value.isdigit() and int(value) > GUNICORN_DRAIN_BYTES
        ):
            req.force_close()
            return
