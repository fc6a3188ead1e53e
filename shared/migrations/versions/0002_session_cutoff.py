"""Users: the session cutoff, before which a user's tokens no longer count.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Read by primary key on every token the api checks (cached briefly); NULL: no
    # logout or password change yet, every unexpired token counts.
    op.execute("ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz")


def downgrade() -> None:
    op.execute("ALTER TABLE users DROP COLUMN tokens_valid_after")
