"""Resumable (tus) uploads in progress: owner, length, durable offset, the Cloud Storage
session and the tail of bytes Cloud Storage cannot take yet, and the expiry.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE tus_uploads (
            id              uuid PRIMARY KEY,
            owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            -- The key of the advisory lock a PATCH holds while it streams (one per upload).
            lock_key        bigint NOT NULL,
            upload_length   bigint NOT NULL CHECK (upload_length > 0),
            -- Bytes received and durable: those Cloud Storage holds plus the tail.
            upload_offset   bigint NOT NULL DEFAULT 0
                CHECK (upload_offset BETWEEN 0 AND upload_length),
            -- The last bytes received, fewer than 256 KiB, that Cloud Storage cannot take
            -- until more follow (its chunks are multiples of 256 KiB but the last).
            tail            bytea NOT NULL DEFAULT ''::bytea
                CHECK (length(tail) < 262144 AND length(tail) <= upload_offset),
            session_url     text NOT NULL,
            object_uri      text NOT NULL,
            metadata        text NOT NULL DEFAULT '',
            filename        text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now(),
            completed_at    timestamptz,
            expires_at      timestamptz NOT NULL
        );
        CREATE INDEX tus_uploads_owner_idx ON tus_uploads (owner_id) WHERE completed_at IS NULL;
        CREATE INDEX tus_uploads_expires_idx ON tus_uploads (expires_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE tus_uploads")
