"""Per-user limits: when a task took one of its owner's in-flight slots, and the size of
its stored original.

``dispatched_at`` is set when a task's ``TaskSubmitted`` is let out to the workers; a
task without it waits for one of its owner's slots. Every existing task was published
under the old rules, so it counts as dispatched at its creation.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE tasks
            ADD COLUMN dispatched_at timestamptz,
            ADD COLUMN source_bytes  bigint CHECK (source_bytes >= 0);
        UPDATE tasks SET dispatched_at = created_at;
        -- An owner's tasks in flight (dispatched, not finished): counted at every submit.
        CREATE INDEX tasks_owner_in_flight_idx ON tasks (owner_id)
            WHERE dispatched_at IS NOT NULL AND deleted_at IS NULL
              AND status IN ('queued', 'processing');
        -- Tasks waiting for a slot, oldest first: what the outbox relay lets out.
        CREATE INDEX tasks_held_idx ON tasks (owner_id, created_at, id)
            WHERE dispatched_at IS NULL AND deleted_at IS NULL AND status = 'queued';
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX tasks_held_idx;
        DROP INDEX tasks_owner_in_flight_idx;
        ALTER TABLE tasks DROP COLUMN source_bytes, DROP COLUMN dispatched_at;
        """
    )
