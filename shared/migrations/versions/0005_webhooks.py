"""Webhook endpoints and their deliveries.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE webhook_endpoints (
            id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            owner_id            uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            url                 text NOT NULL,
            description         text NOT NULL DEFAULT '',
            events              text[] NOT NULL,
            secret              bytea NOT NULL,
            previous_secret     bytea,
            previous_secret_until timestamptz,
            enabled             boolean NOT NULL DEFAULT true,
            disabled_reason     text,
            failing_since       timestamptz,
            created_at          timestamptz NOT NULL DEFAULT now(),
            updated_at          timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX webhook_endpoints_owner_idx ON webhook_endpoints (owner_id, created_at);

        CREATE TABLE webhook_deliveries (
            id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
            message_id       text NOT NULL,
            event_type       text NOT NULL,
            body             text NOT NULL,
            status           text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'delivered', 'failed')),
            attempts         integer NOT NULL DEFAULT 0,
            next_attempt_at  timestamptz,
            last_attempt_at  timestamptz,
            last_status_code integer,
            last_error       text,
            last_response    text,
            last_latency_ms  integer,
            created_at       timestamptz NOT NULL DEFAULT now(),
            completed_at     timestamptz
        );
        -- What the dispatchers still have to send, soonest first.
        CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
            WHERE status = 'pending';
        -- An endpoint's delivery log, newest first.
        CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at);
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE webhook_deliveries, webhook_endpoints")
