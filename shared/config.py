"""One typed settings object for every service.

Defaults are the local stack's; the environment overrides any field by its upper-cased
name (``UPLOADS_BUCKET``, ``DATABASE_URL``...). In production, settings that have no
safe default are checked at start (:meth:`Settings.require_production`).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# The ffmpeg runs a part may take: its scene window, its loudness measurement, its clip.
_FFMPEG_RUNS_PER_PART = 3
# Settings that were renamed: a process given the old name stops, rather than quietly
# running on the new one's default.
RENAMED_SETTINGS = {"MAX_TASKS_IN_FLIGHT_PER_USER": "MAX_PARTS_IN_FLIGHT_PER_USER"}


class Settings(BaseSettings):
    """Every knob of the platform, with its default. Field ``x`` is read from env ``X``."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", use_attribute_docstrings=True
    )

    environment: Literal["local", "test", "production"] = "local"
    """Where the process runs: `local`, `test` or `production` (production requires its
    settings and ignores test-only faults)."""
    service_name: str = "idrl"
    """Name reported to PostgreSQL as the application name."""

    # --- database -----------------------------------------------------------------
    database_url: str | None = "postgresql+pg8000://idrl:idrl@127.0.0.1:5433/idrl"
    """SQLAlchemy URL of a host/port database; ignored when INSTANCE_CONNECTION_NAME is set."""
    instance_connection_name: str | None = None
    """Cloud SQL instance (`project:region:instance`); when set, connections go through the
    Cloud SQL Python Connector."""
    db_user: str = "idrl"
    """Database user (Cloud SQL)."""
    db_password: str | None = None
    """Database password (Cloud SQL; from Secret Manager in production)."""
    db_name: str = "idrl"
    """Database name (Cloud SQL)."""
    db_ip_type: Literal["private", "public", "psc"] = "private"
    """Which Cloud SQL address the connector uses: `private`, `public` or `psc`."""
    db_pool_size: int = 5
    """Connections each process keeps open."""
    db_max_overflow: int = 5
    """Extra connections a process may open under load."""
    db_pool_timeout_seconds: float = 10.0
    """How long a request waits for a free connection."""
    db_pool_recycle_seconds: int = 1800
    """Connections older than this are replaced."""
    db_statement_timeout_ms: int = 15_000
    """PostgreSQL `statement_timeout` for every connection."""

    # --- Google Cloud / emulators -------------------------------------------------------
    google_cloud_project: str = "idrl-local"
    """Project of the topics, subscriptions and buckets."""
    uploads_bucket: str = "idrl-uploads"
    """Bucket of uploaded originals."""
    clips_bucket: str = "idrl-clips"
    """Bucket of the clips and their posters."""
    topic_video_tasks: str = "video-tasks"
    """Topic of `TaskSubmitted`."""
    topic_task_events: str = "task-events"
    """Topic of `TaskStatusChanged`."""
    subscription_transcoder: str = "video-tasks-transcoder"
    """The workers' subscription to `video-tasks`."""
    subscription_notifier: str = "task-events-notifier"
    """The notifier's subscription to `task-events` (local runner)."""
    transcoder_ack_deadline_seconds: int = 60
    """Ack deadline of the workers' subscription where the stack creates it (leases are
    extended while ffmpeg runs)."""
    notifier_ack_deadline_seconds: int = 30
    """Ack deadline of the notifier's subscription where the stack creates it."""

    # --- tokens -------------------------------------------------------------------------
    token_issuer: str = "idrl-auth"
    """`iss` of access tokens, checked on verification."""
    token_audience: str = "idrl-api"
    """`aud` of access tokens, checked on verification."""
    token_ttl_seconds: int = 3600
    """Lifetime of an access token."""
    token_signing_key: str | None = Field(default=None, repr=False)
    """Ed25519 private key (PEM text) that signs tokens (auth only)."""
    token_signing_key_file: str | None = None
    """Path of that key as a PEM file (the local stack generates one)."""
    token_signing_key_secret: str | None = None
    """Secret Manager version holding that key (production)."""
    token_previous_public_keys: str = ""
    """Ed25519 public keys (PEM blocks one after another; line breaks may be written as
    `\\n`) of earlier signing keys: auth publishes them in its JWKS beside the current
    key, never signs with them, so their tokens keep verifying through a key rotation
    (auth only; docs/deploy.md)."""
    auth_jwks_url: str = "http://127.0.0.1:5051/auth/.well-known/jwks.json"
    """Where the api fetches the keys that verify tokens."""
    jwks_cache_seconds: int = Field(default=300, gt=0)
    """How long the api keeps those keys before fetching them again: a key auth stops
    publishing stops verifying within this time; also the `max-age` of auth's JWKS answer."""
    token_cutoff_cache_seconds: float = Field(default=30.0, ge=0, le=30)
    """How long an api process keeps a user's session cutoff (set by logout and password
    change) before reading it again: a logged-out token may still work this long on a
    process that read the earlier cutoff (at most 30; 0 reads it on every request)."""

    # --- HTTP ---------------------------------------------------------------------------
    trusted_proxy_hops: int = 1
    """`X-Forwarded-For` entries added by the gateway or load balancer (the client address is
    read behind them)."""

    # --- auth ---------------------------------------------------------------------------
    login_failures_per_minute: int = 20
    """Password attempts (failed or under way) allowed each minute from one client address
    (then 429), and on one account before a client that already tried it this minute is
    refused (429) until the minute ends; a client that has not tried it is always checked
    (docs/api.md, "Login limits")."""
    signups_per_minute_per_client: int = 30
    """Sign-ups allowed per client address each minute (then 429)."""

    # --- api ----------------------------------------------------------------------------
    max_request_json_bytes: int = 64 * 1024
    """Largest JSON body accepted (413 past it)."""
    max_upload_bytes: int = 500 * 1024 * 1024
    """Largest uploaded file (413 past it)."""
    upload_chunk_bytes: int = 8 * 1024 * 1024
    """Chunk of the resumable upload to Cloud Storage (a multiple of 256 KiB)."""
    upload_timeout_seconds: float = 15 * 60
    """Time a whole upload may take; a client trickling its body is cut off with 408."""
    max_url_length: int = 2048
    """Longest source URL accepted (422 past it)."""
    tasks_per_minute_per_user: int = 30
    """Submissions allowed per user each minute (then 429)."""
    reads_per_minute_per_user: int = 600
    """Reads (`GET /tasks`, `GET /tasks/<id>`, downloads) allowed per user each minute
    (then 429)."""
    max_parts_in_flight_per_user: int = Field(default=4, ge=1)
    """Units of work of one user let out to the workers and not done at once: a task
    until a worker plans it, then each of its parts until its clips are recorded. Later
    ones are accepted and wait, queued, for one of them to end, so no user holds more
    than this many places in the fleet's line (docs/queue.md, "Fair share")."""
    max_stored_bytes_per_user: int = Field(default=20 * 1024**3, ge=1)
    """Bytes one user may keep stored (uploaded originals and clips of tasks not deleted);
    a submission past it is refused with 409 `storage_quota_exceeded`."""
    idempotency_window_hours: int = 24
    """How long an `Idempotency-Key` gives back its original task."""
    list_default_max: int = 20
    """Tasks listed when `max` is not given."""
    list_cap_max: int = 100
    """Most tasks one list answer holds."""
    signed_urls: bool = False
    """The download routes answer a redirect to a V4 signed Cloud Storage URL made for that
    one download (Google Cloud) instead of streaming the file; task links stay the api's
    routes, so a read signs nothing."""
    signed_url_minutes: int = 15
    """Lifetime of a signed download URL."""
    public_base_url: str = ""
    """Prefix of the links in answers and webhook payloads; empty for relative links
    (required in production by the api and the notifier: receivers need absolute links)."""
    outbox_relay_enabled: bool = True
    """Whether each api process runs the outbox relay thread."""
    outbox_relay_interval_seconds: float = 2.0
    """How often the relay looks for unpublished messages."""
    outbox_republish_after_seconds: float = 5.0
    """Age after which the relay publishes a message the request itself did not."""
    outbox_publish_timeout_seconds: float = 5.0
    """How long a publish may take before the relay retries the row."""
    outbox_relay_batch: int = 100
    """Messages the relay publishes per round."""
    outbox_requeue_after_seconds: float = 900.0
    """A task still queued, or processing without news, this long after its message was
    published gets it published again (a message lost after Pub/Sub accepted it); 0 turns
    this off."""
    tus_upload_expiry_hours: float = 24.0
    """How long a resumable (tus) upload at `/uploads` lives: an incomplete one, or a complete
    one not yet submitted as a task, is removed by the sweep after this (`Upload-Expires`)."""
    tus_max_uploads_in_progress: int = 5
    """Incomplete resumable uploads one user may hold at once (429 past it)."""
    tus_sweep_interval_seconds: float = 60.0
    """How often each api process removes expired resumable uploads; 0 turns the sweep off."""
    tus_cors_origins: str = ""
    """Browser origins (comma-separated, e.g. `https://app.league.example`) allowed to call
    `/uploads` from another origin; empty: none."""
    fault_crash_after_commit: bool = False
    """Test-only fault: the api exits right after committing a task, before publishing it.
    Ignored in production."""

    # --- sources and processing -------------------------------------------------------
    allow_loopback_sources: bool = False
    """Let workers fetch sources from loopback (the local stack only; private, link-local and
    metadata addresses stay refused)."""
    max_source_bytes: int = 2 * 1024 * 1024 * 1024
    """Largest source a worker downloads."""
    max_source_seconds: float = 30 * 60
    """Longest source duration accepted."""
    max_source_width: int = 7680
    """Widest source accepted."""
    max_source_height: int = 4320
    """Tallest source accepted."""
    fetch_connect_timeout_seconds: float = 5.0
    """Connect timeout of a source download."""
    fetch_read_timeout_seconds: float = 30.0
    """Read timeout (between two reads) of a source download."""
    fetch_min_bytes_per_second: int = 16 * 1024
    """Least average rate of a source download, judged from FETCH_THROUGHPUT_GRACE_SECONDS
    on: a source that sends slower (a trickle, a stall) fails the task; 0 turns it off."""
    fetch_throughput_grace_seconds: float = 20.0
    """How long a source download runs before its average rate is judged; below the read
    timeout, so a source that stalls fails for its slowness rather than being retried."""
    fetch_max_redirects: int = 5
    """Redirects a source download may follow (each one checked)."""
    transcoder_concurrency: int = 0
    """Clips a worker makes at once; 0: one per two vCPUs."""
    transcoder_lease_extension_seconds: int = 20
    """How far each Pub/Sub lease extension reaches: the message of a worker that dies
    comes back within about this long (at least 10)."""
    fetch_total_timeout_seconds: float = 600.0
    """Wall-clock limit of a whole source download (connecting, redirects, headers and
    body): a download still running then is cut and fails the task."""
    probe_timeout_seconds: float = 60.0
    """Time ffprobe may take on a source."""
    retry_initial_seconds: float = 1.0
    """First pause before retrying a transient error; it doubles, up to 30 s."""
    retry_tries: int = Field(default=3, ge=1)
    """How many times a worker tries one operation that fails transiently (a source
    download, a clip's upload, deleting a task's outputs, a read of the task) before it
    gives up on it; the task's own attempts are `max_attempts`."""
    outcome_confirm_seconds: float = 30.0
    """After publishing an outcome, how long a worker waits for the notifier to record it
    before letting go of the task."""
    max_attempts: int = 3
    """Attempts at a task (deliveries that start its work) before it fails."""
    ffmpeg_timeout_seconds: float = 15 * 60
    """Wall-clock limit of one ffmpeg run."""
    ffmpeg_memory_limit_bytes: int = Field(default=3 * 1024 * 1024 * 1024, ge=0)
    """Address space (RLIMIT_AS) each ffmpeg and ffprobe run may use; a source that needs
    more fails with the reason. Sized for a 4K source (docs/reliability.md); 0: no limit."""
    ffmpeg_threads: int = Field(default=0, ge=0)
    """Threads of each ffmpeg run's decoder, filter graph and encoders; 0: ffmpeg's choice
    (about one per core each). One thread makes a clip slower but costs less CPU, the more
    so with several formats (docs/benchmarks.md, "Clip options")."""
    fanout_min_parts: int = Field(default=2, ge=0)
    """A task of at least this many parts is planned by one worker, which makes the first
    part itself from the source while it stores the other parts' segments and hands
    those parts to the fleet as messages of their own, so idle workers make them at once
    (docs/transcoder.md, "Parts across the fleet"); 0: one worker makes all of a task's
    parts."""
    drain_grace_seconds: float = 60.0
    """On SIGTERM, how long a worker lets the current clip finish before handing the task back."""
    cancel_poll_seconds: float = 1.0
    """How often a worker checks whether its task was canceled."""
    progress_interval_seconds: float = 2.0
    """Least time between two progress events of a task."""
    loudness_target_lufs: float = Field(default=-14.0, ge=-70, le=-5)
    """Integrated loudness (LUFS, EBU R128) a clip's content audio is brought to; tasks get
    it unless they send `"loudness": "off"`, which keeps the source's levels."""
    loudness_true_peak_dbtp: float = Field(default=-1.0, ge=-9, le=0)
    """True peak (dBTP) the loudness-normalized audio may not pass."""
    scene_window_seconds: float = Field(default=5.0, gt=0, le=20)
    """For a task with `"split": "scenes"`: a part boundary moves back to the last scene cut
    at most this many seconds before it (every part stays at most 20 s)."""
    logo_path: str | None = None
    """Logo card image; empty: the transcoder's bundled card."""
    card_font_path: str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
    """Font the cards' title and subtitle are set in (Debian's fonts-dejavu-core); a worker
    whose font is missing stops at start."""
    scratch_dir: str | None = None
    """Where workers keep a task's temporary files; empty: the system's temporary folder."""

    # --- webhooks -----------------------------------------------------------------------
    webhook_endpoints_per_user: int = 10
    """Webhook endpoints one user may register (then 409)."""
    webhook_secret_key: str | None = Field(default=None, repr=False)
    """Key (base64 of 32 bytes) that encrypts the endpoints' signing secrets at rest
    (api and dispatcher); empty outside production: a fixed local key."""
    webhook_secret_overlap_hours: float = 24.0
    """After a secret rotation, how long deliveries carry the old secret's signature too."""
    webhook_attempt_timeout_seconds: float = 10.0
    """Wall-clock limit of one delivery attempt (connect, send, answer)."""
    webhook_retry_initial_seconds: float = 10.0
    """Pause before the first retry of a delivery; each next pause is 3 times longer."""
    webhook_retry_max_seconds: float = 4 * 3600.0
    """Longest pause between two attempts (also the most a `Retry-After` is honoured)."""
    webhook_retry_window_seconds: float = 24 * 3600.0
    """How long a delivery is retried after it was created; the first attempt past it
    that fails marks it failed."""
    webhook_disable_after_seconds: float = 5 * 24 * 3600.0
    """An endpoint whose attempts have all failed for this long is disabled."""
    allow_loopback_webhooks: bool = False
    """Let webhook endpoints be on loopback (the local stack only; private, link-local and
    metadata addresses stay refused)."""
    dispatcher_concurrency: int = 16
    """Deliveries one dispatcher sends at once."""
    dispatcher_poll_seconds: float = 0.2
    """How often an idle dispatcher looks for due deliveries."""
    dispatcher_lease_seconds: float = 60.0
    """How long a dispatcher holds a delivery it took; one that dies lets it go after this."""
    webhook_deliveries_listed: int = 50
    """Most deliveries one `GET /webhooks/<id>/deliveries` answer holds."""

    # --- logging ------------------------------------------------------------------------
    log_level: str = "INFO"
    """Lowest level logged."""

    @model_validator(mode="after")
    def _no_renamed_setting(self) -> Settings:
        given = {name.upper() for name in os.environ}
        for old, new in RENAMED_SETTINGS.items():
            if old in given:
                raise ValueError(f"{old} is now {new}: set that instead")
        return self

    @field_validator("tus_upload_expiry_hours", "tus_max_uploads_in_progress")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than 0")
        return value

    @field_validator("tus_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        for origin in filter(None, (o.strip() for o in value.split(","))):
            if origin == "*" or not origin.startswith(("https://", "http://")) or origin.count("/") > 2:
                raise ValueError(f"{origin!r}: list origins as scheme://host[:port], never '*'")
        return value

    @field_validator("upload_chunk_bytes")
    @classmethod
    def _chunk_is_resumable_multiple(cls, value: int) -> int:
        if value <= 0 or value % (256 * 1024):
            raise ValueError("must be a positive multiple of 262144 (256 KiB)")
        return value

    @property
    def transcoder_slots(self) -> int:
        """Clips a worker makes at once: the setting, or one per two vCPUs."""
        if self.transcoder_concurrency > 0:
            return self.transcoder_concurrency
        return max(1, (os.cpu_count() or 1) // 2)

    @property
    def transcoder_max_lease_seconds(self) -> float:
        """The longest a task may legitimately hold its message: fetch and probe, then
        every part of the longest allowed source at the ffmpeg limit for each of its runs,
        then the drain grace.

        A part lasts at least 20 s less the scene window (a scene-aware boundary moves
        back by up to the window), and takes up to three ffmpeg runs: its scene window's
        search, its loudness measurement and its clip (every format in one run)."""
        shortest_part = max(1.0, 20.0 - self.scene_window_seconds)
        most_parts = math.ceil(self.max_source_seconds / shortest_part)
        return (
            self.fetch_total_timeout_seconds
            + self.probe_timeout_seconds
            + most_parts * _FFMPEG_RUNS_PER_PART * self.ffmpeg_timeout_seconds
            + self.drain_grace_seconds
        )

    @property
    def is_production(self) -> bool:
        return self.environment == "production"

    def missing_production_settings(self, service: str) -> list[str]:
        """The settings ``service`` needs in production that this process was not given.

        A setting counts as given only when the environment (or the caller) set it to a
        non-empty value: the defaults are the local stack's (127.0.0.1, `idrl-local`...),
        so a production process must never run on them. Where any one of a group will
        do (the database, the signing key) the group is named as ``A or B``.
        """
        missing = []
        for required in PRODUCTION_SETTINGS[service]:
            group = (required,) if isinstance(required, str) else required
            if not any(name in self.model_fields_set and getattr(self, name) for name in group):
                missing.append(" or ".join(name.upper() for name in group))
        return missing

    def require_production(self, service: str) -> None:
        """Stop at start, with a clear message and no traceback, when ``service`` runs in
        production without a setting it needs (:data:`PRODUCTION_SETTINGS`).

        Outside production this does nothing: local defaults apply.
        """
        if not self.is_production:
            return
        missing = self.missing_production_settings(service)
        if missing:
            raise SystemExit(
                f"{service}: ENVIRONMENT=production but required setting(s) missing: {', '.join(missing)}"
            )


# Any one of these reaches the database; without either a production process would aim at
# the local default, 127.0.0.1.
DATABASE = ("instance_connection_name", "database_url")

PRODUCTION_SETTINGS: dict[str, tuple[str | tuple[str, ...], ...]] = {
    "api": (
        DATABASE,
        "google_cloud_project",
        "uploads_bucket",
        "clips_bucket",
        "auth_jwks_url",
        "public_base_url",
        "webhook_secret_key",
    ),
    "auth": (DATABASE, ("token_signing_key", "token_signing_key_file", "token_signing_key_secret")),
    "transcoder": (DATABASE, "google_cloud_project", "uploads_bucket", "clips_bucket"),
    "notifier": (DATABASE, "google_cloud_project", "clips_bucket", "public_base_url"),
    "dispatcher": (DATABASE, "webhook_secret_key"),
}
"""What each service must be given in production (a tuple: any one of its names)."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()


def settings_table() -> str:
    """The settings as a Markdown table (variable, default, meaning), for the README."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "" if field.default is None else f"`{field.default}`"
        meaning = " ".join((field.description or "").split())
        rows.append(f"| `{name.upper()}` | {default} | {meaning} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(settings_table())
