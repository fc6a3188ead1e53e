"""The fleet's line: dispatched tasks not finished, by status and dispatch order.

A task's place in line (``GET /tasks/<id>``'s ``queue``, docs/queue.md) counts the
dispatched queued tasks let out before it and reads the tasks being processed; this
partial index serves both with a range of its entries, never a scan of the table. Its
predicate is the one of ``tasks_owner_in_flight_idx``, so it stays as small as the work
in flight.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE INDEX tasks_dispatched_line_idx ON tasks (status, dispatched_at, id)
            WHERE dispatched_at IS NOT NULL AND deleted_at IS NULL
              AND status IN ('queued', 'processing');
        """
    )


def downgrade() -> None:
    op.execute("DROP INDEX tasks_dispatched_line_idx;")
