"""Clips recorded as they are made: the number a task will have, and when each was made.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # clips_total stays NULL until a worker has planned the task's parts. made_at counts
    # the fleet's recent throughput (the queue's estimates); rows made before this
    # revision take its time.
    op.execute(
        """
        ALTER TABLE tasks
            ADD COLUMN clips_total integer,
            ADD CONSTRAINT tasks_clips_total_check CHECK (clips_total >= 0);
        ALTER TABLE clips ADD COLUMN made_at timestamp with time zone NOT NULL DEFAULT now();
        CREATE INDEX clips_made_at_idx ON clips (made_at);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX clips_made_at_idx;
        ALTER TABLE clips DROP COLUMN made_at;
        ALTER TABLE tasks DROP CONSTRAINT tasks_clips_total_check, DROP COLUMN clips_total;
        """
    )
