"""One typed settings object for every service.

Defaults are the local stack's; the environment overrides any field by its upper-cased
name (``UPLOADS_BUCKET``, ``DATABASE_URL``...). In production, settings that have no
safe default are checked at start (:meth:`Settings.require_production`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the platform, with its default. Field ``x`` is read from env ``X``."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    environment: Literal["local", "test", "production"] = "local"
    service_name: str = "idrl"

    # --- database -----------------------------------------------------------------
    database_url: str | None = Field(
        default="postgresql+pg8000://idrl:idrl@127.0.0.1:5433/idrl",
        description="SQLAlchemy URL for a host/port database; ignored when "
        "INSTANCE_CONNECTION_NAME is set.",
    )
    instance_connection_name: str | None = None  # project:region:instance (Cloud SQL)
    db_user: str = "idrl"
    db_password: str | None = None
    db_name: str = "idrl"
    db_ip_type: Literal["private", "public", "psc"] = "private"
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout_seconds: float = 10.0
    db_pool_recycle_seconds: int = 1800
    db_statement_timeout_ms: int = 15_000

    # --- Google Cloud / emulators -------------------------------------------------------
    google_cloud_project: str = "idrl-local"
    uploads_bucket: str = "idrl-uploads"
    clips_bucket: str = "idrl-clips"
    topic_video_tasks: str = "video-tasks"
    topic_task_events: str = "task-events"
    subscription_transcoder: str = "video-tasks-transcoder"
    subscription_notifier: str = "task-events-notifier"
    transcoder_ack_deadline_seconds: int = 60
    notifier_ack_deadline_seconds: int = 30

    # --- tokens -------------------------------------------------------------------------
    token_issuer: str = "idrl-auth"
    token_audience: str = "idrl-api"
    token_ttl_seconds: int = 3600
    token_signing_key: str | None = Field(default=None, repr=False)  # PEM text
    token_signing_key_file: str | None = None  # path of a PEM file
    token_signing_key_secret: str | None = None  # Secret Manager version resource name
    auth_jwks_url: str = "http://127.0.0.1:5051/auth/.well-known/jwks.json"
    jwks_cache_seconds: int = 300

    # --- HTTP ---------------------------------------------------------------------------
    trusted_proxy_hops: int = 1  # X-Forwarded-For entries added by our gateway/load balancer

    # --- auth ---------------------------------------------------------------------------
    login_failures_per_minute: int = 20  # per account and per client address
    signups_per_minute_per_client: int = 30

    # --- api ----------------------------------------------------------------------------
    max_request_json_bytes: int = 64 * 1024
    max_upload_bytes: int = 500 * 1024 * 1024
    upload_chunk_bytes: int = 8 * 1024 * 1024  # multiple of 256 KiB (resumable upload)
    upload_timeout_seconds: float = 15 * 60  # a whole upload; a trickling client is cut off
    max_url_length: int = 2048
    tasks_per_minute_per_user: int = 30
    idempotency_window_hours: int = 24
    list_default_max: int = 20
    list_cap_max: int = 100
    signed_urls: bool = False  # V4 signed download URLs (Google Cloud); api route otherwise
    signed_url_minutes: int = 15
    public_base_url: str = ""  # prefix for links; empty: relative links
    outbox_relay_enabled: bool = True
    outbox_relay_interval_seconds: float = 2.0
    outbox_republish_after_seconds: float = 5.0
    outbox_publish_timeout_seconds: float = 5.0  # then the relay retries the row
    outbox_relay_batch: int = 100
    # A task still queued, or processing without news, this long after its TaskSubmitted
    # was published gets it published again (the message was lost); 0 turns that off.
    outbox_requeue_after_seconds: float = 900.0
    # Test-only fault injection: the api process exits right after committing a new task
    # and before publishing it (the outbox crash test). Ignored in production.
    fault_crash_after_commit: bool = False

    # --- sources and processing -------------------------------------------------------
    allow_loopback_sources: bool = False  # local stack only: lets workers fetch 127.0.0.0/8
    max_source_bytes: int = 2 * 1024 * 1024 * 1024
    max_source_seconds: float = 30 * 60
    max_source_width: int = 7680
    max_source_height: int = 4320
    fetch_connect_timeout_seconds: float = 5.0
    fetch_read_timeout_seconds: float = 30.0
    fetch_max_redirects: int = 5
    transcoder_concurrency: int = 0  # 0: one clip at a time per 2 vCPUs
    max_attempts: int = 3
    ffmpeg_timeout_seconds: float = 15 * 60
    drain_grace_seconds: float = 60.0
    cancel_poll_seconds: float = 1.0
    progress_interval_seconds: float = 2.0
    logo_path: str | None = None  # None: the transcoder's bundled logo card
    scratch_dir: str | None = None  # None: the system temporary directory

    # --- logging ------------------------------------------------------------------------
    log_level: str = "INFO"

    @field_validator("upload_chunk_bytes")
    @classmethod
    def _chunk_is_resumable_multiple(cls, value: int) -> int:
        if value <= 0 or value % (256 * 1024):
            raise ValueError("must be a positive multiple of 262144 (256 KiB)")
        return value

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def require_production(self, *fields: str) -> None:
        """Stop at start, with a clear message, when a production setting is missing.

        Outside production this does nothing: local defaults apply.
        """
        if not self.is_production:
            return
        missing = [name for name in fields if not getattr(self, name)]
        if missing:
            names = ", ".join(name.upper() for name in missing)
            raise SystemExit(f"missing required production setting(s): {names}")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
