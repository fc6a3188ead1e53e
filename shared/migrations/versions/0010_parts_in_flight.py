"""A part of a task made across the fleet is a unit of its owner's fair share.

The notifier records each part when its planning worker hands it out, held
(``dispatched_at`` NULL) until its owner has room; its ``PartSubmitted`` then goes out
of the outbox (``dispatched_at`` set). ``made_at`` is set once the part's clips are
recorded: a part dispatched and not made holds one of its owner's places
(``MAX_PARTS_IN_FLIGHT_PER_USER``; docs/queue.md, "Fair share").

Rows written before this revision were published by their planning worker at once:
they count as dispatched, and as made when their clips are recorded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE task_parts
            ADD COLUMN created_at timestamptz NOT NULL DEFAULT now(),
            ADD COLUMN dispatched_at timestamptz,
            ADD COLUMN made_at timestamptz;
        UPDATE task_parts SET created_at = updated_at, dispatched_at = updated_at;
        UPDATE task_parts SET made_at = updated_at
         WHERE EXISTS (SELECT 1 FROM clips
                        WHERE clips.task_id = task_parts.task_id AND clips.index = task_parts.index);
        CREATE INDEX task_parts_held_idx ON task_parts (task_id, index)
         WHERE dispatched_at IS NULL;
        CREATE INDEX task_parts_in_flight_idx ON task_parts (task_id, dispatched_at)
         WHERE dispatched_at IS NOT NULL AND made_at IS NULL;
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX task_parts_in_flight_idx;
        DROP INDEX task_parts_held_idx;
        ALTER TABLE task_parts DROP COLUMN made_at, DROP COLUMN dispatched_at, DROP COLUMN created_at;
        """
    )
