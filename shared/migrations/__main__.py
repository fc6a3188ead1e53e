"""``python -m shared.migrations [revision]``: upgrade the configured database."""

import sys

from shared.logging import configure_logging
from shared.migrations import upgrade

configure_logging("migrations")
upgrade(revision=sys.argv[1] if len(sys.argv) > 1 else "head")
