"""The local stack: every component of the platform as a local process.

Modules: stack_config (StackConfig and the one-shot steps), postgres, emulators
(Pub/Sub and Cloud Storage), gateway (nginx) and stack (the services and LocalStack).

`make up` runs it through `python -m infra.local up`; the test fixtures in
tests/conftest.py start the same components through the same functions.
"""

from infra.local.emulators import build_pstest, start_pubsub, start_storage
from infra.local.postgres import start_postgres
from infra.local.process import ManagedProcess, StartupError, free_port, port_bindable
from infra.local.stack import LocalStack
from infra.local.stack_config import PORT_FIELDS, StackConfig, free_ports, run_migrations

__all__ = [
    "PORT_FIELDS",
    "LocalStack",
    "ManagedProcess",
    "StackConfig",
    "StartupError",
    "build_pstest",
    "free_port",
    "free_ports",
    "port_bindable",
    "run_migrations",
    "start_postgres",
    "start_pubsub",
    "start_storage",
]
