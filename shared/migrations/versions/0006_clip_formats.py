"""A clip per format and part, and each clip's preview.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Clips made before formats existed are the 16:9 ones, and keep their rows.
    op.execute(
        """
        ALTER TABLE clips
            ADD COLUMN format text NOT NULL DEFAULT '16:9',
            ADD COLUMN preview_uri text,
            ADD CONSTRAINT clips_format_check CHECK (format IN ('16:9', '9:16', '1:1'));
        ALTER TABLE clips DROP CONSTRAINT clips_pkey;
        ALTER TABLE clips ADD CONSTRAINT clips_pkey PRIMARY KEY (task_id, index, format);
        """
    )


def downgrade() -> None:
    # Only the 16:9 clips fit the older key (one clip per part).
    op.execute(
        """
        DELETE FROM clips WHERE format <> '16:9';
        ALTER TABLE clips DROP CONSTRAINT clips_pkey;
        ALTER TABLE clips ADD CONSTRAINT clips_pkey PRIMARY KEY (task_id, index);
        ALTER TABLE clips DROP CONSTRAINT clips_format_check, DROP COLUMN preview_uri, DROP COLUMN format;
        """
    )
