"""Users, tasks, clips, the outbox, applied events, status history and rate limits.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            username      text NOT NULL CHECK (length(username) BETWEEN 1 AND 64),
            email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
            password_hash text NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX users_username_key ON users (lower(username));
        CREATE UNIQUE INDEX users_email_key ON users (lower(email));

        CREATE TABLE tasks (
            id                  uuid PRIMARY KEY,
            owner_id            uuid NOT NULL REFERENCES users (id),
            status              text NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'processing', 'processed', 'failed', 'canceled')),
            source_kind         text NOT NULL CHECK (source_kind IN ('url', 'upload')),
            source              text NOT NULL,
            source_name         text,
            spec                jsonb NOT NULL,
            progress            smallint NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
            attempt             integer NOT NULL DEFAULT 0,
            failure_reason      text,
            worker_id           text,
            idempotency_key     text,
            request_fingerprint text,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now(),
            status_changed_at   timestamptz NOT NULL DEFAULT now(),
            deleted_at          timestamptz
        );
        -- The owner's list: newest or oldest first, deleted tasks left out.
        CREATE INDEX tasks_owner_created_idx ON tasks (owner_id, created_at, id)
            WHERE deleted_at IS NULL;
        CREATE UNIQUE INDEX tasks_owner_idempotency_key ON tasks (owner_id, idempotency_key)
            WHERE idempotency_key IS NOT NULL;

        CREATE TABLE clips (
            task_id          uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            index            integer NOT NULL,
            uri              text NOT NULL,
            poster_uri       text,
            duration_seconds double precision NOT NULL,
            size_bytes       bigint NOT NULL,
            PRIMARY KEY (task_id, index)
        );

        CREATE TABLE outbox (
            id           bigserial PRIMARY KEY,
            topic        text NOT NULL,
            data         bytea NOT NULL,
            attributes   jsonb NOT NULL,
            created_at   timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        );
        CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

        CREATE TABLE applied_events (
            event_id   text PRIMARY KEY,
            task_id    uuid NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE task_history (
            id          bigserial PRIMARY KEY,
            task_id     uuid NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
            status      text NOT NULL,
            progress    smallint NOT NULL,
            attempt     integer NOT NULL,
            event_id    text,
            occurred_at timestamptz NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX task_history_task_idx ON task_history (task_id, id);

        CREATE TABLE rate_limits (
            key          text NOT NULL,
            window_start timestamptz NOT NULL,
            hits         integer NOT NULL,
            PRIMARY KEY (key, window_start)
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE rate_limits, task_history, applied_events, outbox, clips, tasks, users")
