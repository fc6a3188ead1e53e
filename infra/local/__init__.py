"""The local stack: every component of the platform as a local process.

`make up` runs it through `python -m infra.local up`; the test fixtures in
tests/conftest.py start the same components through the same functions.
"""

from infra.local.process import ManagedProcess, StartupError, free_port, port_bindable
from infra.local.stack import (
    LocalStack,
    StackConfig,
    build_pstest,
    run_migrations,
    start_postgres,
    start_pubsub,
    start_storage,
)

__all__ = [
    "LocalStack",
    "ManagedProcess",
    "StackConfig",
    "StartupError",
    "build_pstest",
    "free_port",
    "port_bindable",
    "run_migrations",
    "start_postgres",
    "start_pubsub",
    "start_storage",
]
