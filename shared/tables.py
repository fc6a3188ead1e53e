"""The database's tables as SQLAlchemy Core objects, for queries built in Python.

The Alembic migrations (``shared/migrations/versions``) create the schema and stay its
source; this module describes the same tables so code can write
``select(tasks.c.status).where(tasks.c.id == task_id)`` instead of repeating SQL text.
``tests/integration/test_tables.py`` compares these definitions with a freshly migrated
database, so a migration that changes a table must change this module too.

Constraint and index names are the ones PostgreSQL gave them when the migration ran.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    Uuid,
    bindparam,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from shared.lifecycle import TaskStatus

metadata = MetaData()


_STATUSES = ", ".join(f"'{status}'" for status in TaskStatus)


users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column("username", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Tokens issued before this instant are ended (logout, password change; 0002).
    Column("tokens_valid_after", DateTime(timezone=True)),
    CheckConstraint("length(username) BETWEEN 1 AND 64", name="users_username_check"),
    CheckConstraint("length(email) BETWEEN 3 AND 254", name="users_email_check"),
)
# Usernames and emails are unique regardless of case.
Index("users_username_key", func.lower(users.c.username), unique=True)
Index("users_email_key", func.lower(users.c.email), unique=True)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("owner_id", Uuid, ForeignKey("users.id", name="tasks_owner_id_fkey"), nullable=False),
    Column("status", Text, nullable=False, server_default=text("'queued'")),
    Column("source_kind", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("source_name", Text),
    Column("spec", JSONB, nullable=False),
    Column("progress", SmallInteger, nullable=False, server_default=text("0")),
    Column("attempt", Integer, nullable=False, server_default=text("0")),
    Column("failure_reason", Text),
    Column("worker_id", Text),
    Column("idempotency_key", Text),
    Column("request_fingerprint", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("status_changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("deleted_at", DateTime(timezone=True)),
    # Set when the task's TaskSubmitted is let out to the workers (0003).
    Column("dispatched_at", DateTime(timezone=True)),
    Column("source_bytes", BigInteger),
    # How many parts the task's plan has, once a worker made it (0007).
    Column("clips_total", Integer),
    CheckConstraint(f"status IN ({_STATUSES})", name="tasks_status_check"),
    CheckConstraint("source_kind IN ('url', 'upload')", name="tasks_source_kind_check"),
    CheckConstraint("progress BETWEEN 0 AND 100", name="tasks_progress_check"),
    CheckConstraint("source_bytes >= 0", name="tasks_source_bytes_check"),
    CheckConstraint("clips_total >= 0", name="tasks_clips_total_check"),
)
# The owner's list: newest or oldest first, deleted tasks left out.
Index(
    "tasks_owner_created_idx",
    tasks.c.owner_id,
    tasks.c.created_at,
    tasks.c.id,
    postgresql_where=tasks.c.deleted_at.is_(None),
)
# One task per owner and idempotency key.
Index(
    "tasks_owner_idempotency_key",
    tasks.c.owner_id,
    tasks.c.idempotency_key,
    unique=True,
    postgresql_where=tasks.c.idempotency_key.is_not(None),
)

# An owner's tasks in flight (dispatched, not finished): counted at every submit.
Index(
    "tasks_owner_in_flight_idx",
    tasks.c.owner_id,
    postgresql_where=text(
        "dispatched_at IS NOT NULL AND deleted_at IS NULL AND status IN ('queued', 'processing')"
    ),
)
# Tasks waiting for a slot, oldest first: what the outbox relay lets out.
Index(
    "tasks_held_idx",
    tasks.c.owner_id,
    tasks.c.created_at,
    tasks.c.id,
    postgresql_where=text("dispatched_at IS NULL AND deleted_at IS NULL AND status = 'queued'"),
)
# The fleet's line (0008): dispatched tasks not finished, by status and dispatch order;
# a task's place in line and the work in progress ahead of it (services/api/queue.py).
Index(
    "tasks_dispatched_line_idx",
    tasks.c.status,
    tasks.c.dispatched_at,
    tasks.c.id,
    postgresql_where=text(
        "dispatched_at IS NOT NULL AND deleted_at IS NULL AND status IN ('queued', 'processing')"
    ),
)

clips = Table(
    "clips",
    metadata,
    Column(
        "task_id",
        Uuid,
        ForeignKey("tasks.id", name="clips_task_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("index", Integer, nullable=False),
    Column("uri", Text, nullable=False),
    Column("poster_uri", Text),
    Column("duration_seconds", Double, nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("format", Text, nullable=False, server_default=text("'16:9'")),
    Column("preview_uri", Text),
    # When the notifier recorded the clip (0007): the fleet's recent throughput.
    Column("made_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("task_id", "index", "format", name="clips_pkey"),
    CheckConstraint("format IN ('16:9', '9:16', '1:1')", name="clips_format_check"),
)
Index("clips_made_at_idx", clips.c.made_at)

# Each part of a task made across the fleet (0009): the notifier keeps the highest
# attempt a part's processing events announced.
task_parts = Table(
    "task_parts",
    metadata,
    Column(
        "task_id",
        Uuid,
        ForeignKey("tasks.id", name="task_parts_task_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("index", Integer, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # (0010) Handed out by the planning worker; let out to the fleet when its owner had
    # room (NULL: held); its clips recorded (NULL: not made yet).
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("dispatched_at", DateTime(timezone=True)),
    Column("made_at", DateTime(timezone=True)),
    PrimaryKeyConstraint("task_id", "index", name="task_parts_pkey"),
)
# Parts waiting for their owner to have room, in their task's order (shared/outbox.py).
Index(
    "task_parts_held_idx",
    task_parts.c.task_id,
    task_parts.c.index,
    postgresql_where=text("dispatched_at IS NULL"),
)
# Parts let out and not made: each holds one of its owner's places, and the ones not
# started are the fleet's line (services/api/queue.py).
Index(
    "task_parts_in_flight_idx",
    task_parts.c.task_id,
    task_parts.c.dispatched_at,
    postgresql_where=text("dispatched_at IS NOT NULL AND made_at IS NULL"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("topic", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("attributes", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
)
# What the relay still has to publish, oldest first.
Index("outbox_unpublished_idx", outbox.c.id, postgresql_where=outbox.c.published_at.is_(None))

applied_events = Table(
    "applied_events",
    metadata,
    Column("event_id", Text, primary_key=True),
    Column("task_id", Uuid, nullable=False),
    Column("applied_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

task_history = Table(
    "task_history",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column(
        "task_id",
        Uuid,
        ForeignKey("tasks.id", name="task_history_task_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", Text, nullable=False),
    Column("progress", SmallInteger, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("event_id", Text),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("task_history_task_idx", task_history.c.task_id, task_history.c.id)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("key", Text, nullable=False),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("hits", Integer, nullable=False),
    PrimaryKeyConstraint("key", "window_start", name="rate_limits_pkey"),
)

# Resumable uploads (tus) in progress (0004).
tus_uploads = Table(
    "tus_uploads",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column(
        "owner_id",
        Uuid,
        ForeignKey("users.id", name="tus_uploads_owner_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    # The key of the advisory lock a PATCH holds while it streams.
    Column("lock_key", BigInteger, nullable=False),
    Column("upload_length", BigInteger, nullable=False),
    # Bytes received and durable: those Cloud Storage holds plus the tail.
    Column("upload_offset", BigInteger, nullable=False, server_default=text("0")),
    # The last bytes received, fewer than 256 KiB, that Cloud Storage cannot take yet.
    Column("tail", LargeBinary, nullable=False, server_default=text("'\\x'::bytea")),
    Column("session_url", Text, nullable=False),
    Column("object_uri", Text, nullable=False),
    Column("metadata", Text, nullable=False, server_default=text("''")),
    Column("filename", Text),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    CheckConstraint("upload_length > 0", name="tus_uploads_upload_length_check"),
    CheckConstraint("upload_offset BETWEEN 0 AND upload_length", name="tus_uploads_check"),
    CheckConstraint("length(tail) < 262144 AND length(tail) <= upload_offset", name="tus_uploads_check1"),
)
Index("tus_uploads_owner_idx", tus_uploads.c.owner_id, postgresql_where=text("completed_at IS NULL"))
Index("tus_uploads_expires_idx", tus_uploads.c.expires_at)

webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column(
        "owner_id",
        Uuid,
        ForeignKey("users.id", name="webhook_endpoints_owner_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("url", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=text("''::text")),
    Column("events", ARRAY(Text), nullable=False),
    # Secrets are stored encrypted (shared.webhooks.SecretBox), never in the clear.
    Column("secret", LargeBinary, nullable=False),
    Column("previous_secret", LargeBinary),
    Column("previous_secret_until", DateTime(timezone=True)),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("disabled_reason", Text),
    Column("failing_since", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)
Index("webhook_endpoints_owner_idx", webhook_endpoints.c.owner_id, webhook_endpoints.c.created_at)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Uuid, primary_key=True, server_default=text("gen_random_uuid()")),
    Column(
        "endpoint_id",
        Uuid,
        ForeignKey("webhook_endpoints.id", name="webhook_deliveries_endpoint_id_fkey", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("message_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("status", Text, nullable=False, server_default=text("'pending'::text")),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("last_attempt_at", DateTime(timezone=True)),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("last_response", Text),
    Column("last_latency_ms", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("completed_at", DateTime(timezone=True)),
    CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="webhook_deliveries_status_check"),
)
# What the dispatchers still have to send, soonest first.
Index(
    "webhook_deliveries_due_idx",
    webhook_deliveries.c.next_attempt_at,
    postgresql_where=webhook_deliveries.c.status == "pending",
)
# An endpoint's delivery log, newest first.
Index("webhook_deliveries_endpoint_idx", webhook_deliveries.c.endpoint_id, webhook_deliveries.c.created_at)

# A task's clips (``:id``), in part and format order, with every column of a clip that
# the worker and the api read back (a row's ``_asdict()`` builds their value objects).
TASK_CLIPS = (
    select(
        clips.c.index,
        clips.c.format,
        clips.c.uri,
        clips.c.poster_uri,
        clips.c.preview_uri,
        clips.c.duration_seconds,
        clips.c.size_bytes,
    )
    .where(clips.c.task_id == bindparam("id"))
    .order_by(clips.c.index, clips.c.format)
)
