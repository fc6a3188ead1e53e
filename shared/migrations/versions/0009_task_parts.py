"""The attempts of each part of a task whose parts are made across the fleet.

A part is retried alone, within its own attempt count: the notifier keeps here the
highest attempt each part's processing events announced, and a worker given a part
reads it (docs/transcoder.md, "Parts across the fleet").

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE task_parts (
            task_id uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            index integer NOT NULL,
            attempt integer NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT task_parts_pkey PRIMARY KEY (task_id, index)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE task_parts;")
