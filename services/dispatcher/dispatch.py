"""Take due deliveries, send them, record what happened.

Any number of dispatchers share the table: each takes due rows with ``FOR UPDATE SKIP
LOCKED`` and leases them by moving their ``next_attempt_at`` a lease ahead (and counting
the attempt), in one short transaction. A dispatcher that dies mid-attempt lets its
rows come due again when the lease ends, so they are sent once more (at most one
duplicate per ``webhook-id`` per lease). Recording an attempt is its own transaction,
guarded by the attempt count, so a dispatcher whose lease ran out cannot overwrite the
result of the one that took the row after it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy.exc
from sqlalchemy import DateTime, Interval, Text, bindparam, case, extract, func, null, select, update
from sqlalchemy.engine import Engine

from services.dispatcher.schedule import Decision, RetryPolicy, Verdict, decide, should_disable
from services.dispatcher.sender import Sender, Sent
from shared import webhooks
from shared.config import Settings
from shared.tables import webhook_deliveries, webhook_endpoints

log = logging.getLogger(__name__)

# The database is unreachable or the connection broke (an outage, a restart, a failover):
# the dispatcher waits and asks again rather than exiting. pg8000 lets a socket reset
# during the pool's pre-ping through unwrapped, as an OSError.
_DATABASE_DOWN = (sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError, OSError)
_DATABASE_RETRY_SECONDS = 2.0

_due = webhook_deliveries.alias("due")
_due_owner = webhook_endpoints.alias("owner")
# Due deliveries of enabled endpoints, soonest first; rows another dispatcher is taking
# are skipped, not waited for.
_DUE = (
    select(_due.c.id)
    .join(_due_owner, (_due_owner.c.id == _due.c.endpoint_id) & _due_owner.c.enabled)
    .where(_due.c.status == "pending", _due.c.next_attempt_at <= func.now())
    .order_by(_due.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(of=_due, skip_locked=True)
)
_CLAIM = (
    update(webhook_deliveries)
    .where(webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id, webhook_deliveries.c.id.in_(_DUE))
    .values(
        next_attempt_at=func.now() + bindparam("lease", type_=Interval),
        attempts=webhook_deliveries.c.attempts + 1,
    )
    .returning(
        webhook_deliveries.c.id,
        webhook_deliveries.c.endpoint_id,
        webhook_deliveries.c.message_id,
        webhook_deliveries.c.event_type,
        webhook_deliveries.c.body,
        webhook_deliveries.c.attempts,
        webhook_deliveries.c.created_at,
        webhook_endpoints.c.url,
        webhook_endpoints.c.secret,
        webhook_endpoints.c.previous_secret,
        webhook_endpoints.c.previous_secret_until,
        func.now().label("taken_at"),
    )
)
# The attempt count guards the row: a dispatcher whose lease ran out records nothing.
_OUTCOME = bindparam("outcome", type_=Text)
_RECORD = (
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == bindparam("delivery_id"),
        webhook_deliveries.c.attempts == bindparam("attempt"),
        webhook_deliveries.c.status == "pending",
    )
    .values(
        status=_OUTCOME,
        next_attempt_at=bindparam("retry_at"),
        last_attempt_at=bindparam("attempted_at"),
        last_status_code=bindparam("status_code"),
        last_error=bindparam("error"),
        last_response=bindparam("response"),
        last_latency_ms=bindparam("latency_ms"),
        completed_at=case((_OUTCOME == "pending", null()), else_=func.now()),
    )
)
_ENDPOINT = webhook_endpoints.c.id == bindparam("endpoint")
_SUCCEEDED = (
    update(webhook_endpoints)
    .where(_ENDPOINT, webhook_endpoints.c.failing_since.is_not(None))
    .values(failing_since=null())
)
_FAILED = (
    update(webhook_endpoints)
    .where(_ENDPOINT)
    .values(
        failing_since=func.coalesce(
            webhook_endpoints.c.failing_since, bindparam("failed_at", type_=DateTime(timezone=True))
        )
    )
    .returning(webhook_endpoints.c.failing_since, webhook_endpoints.c.enabled)
)
_DISABLE = (
    update(webhook_endpoints)
    .where(_ENDPOINT, webhook_endpoints.c.enabled)
    .values(enabled=False, disabled_reason=bindparam("reason"), updated_at=func.now())
)
_OLDEST_PENDING = (
    select(
        extract("epoch", func.now() - func.min(webhook_deliveries.c.created_at)).label("age"),
        func.count().label("pending"),
    )
    .select_from(
        webhook_deliveries.join(
            webhook_endpoints,
            (webhook_endpoints.c.id == webhook_deliveries.c.endpoint_id) & webhook_endpoints.c.enabled,
        )
    )
    .where(webhook_deliveries.c.status == "pending")
)


@dataclass(frozen=True)
class Taken:
    """A delivery this dispatcher holds the lease of."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    message_id: str
    event_type: str
    body: str
    attempts: int
    created_at: datetime
    url: str
    secret: bytes
    previous_secret: bytes | None
    previous_secret_until: datetime | None
    taken_at: datetime


def retry_policy(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        initial=settings.webhook_retry_initial_seconds,
        maximum=settings.webhook_retry_max_seconds,
        window=settings.webhook_retry_window_seconds,
        disable_after=settings.webhook_disable_after_seconds,
    )


class Dispatcher:
    """Sends due deliveries, up to ``DISPATCHER_CONCURRENCY`` at once, until stopped."""

    def __init__(self, engine: Engine, settings: Settings, sender: Sender | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.policy = retry_policy(settings)
        self.box = webhooks.SecretBox(settings)
        self.sender = sender or Sender(
            timeout=settings.webhook_attempt_timeout_seconds,
            allow_loopback=settings.allow_loopback_webhooks,
            https_only=settings.is_production,
        )
        self.stop_event = threading.Event()
        self._slots = threading.Semaphore(settings.dispatcher_concurrency)
        self._slot_freed = threading.Event()
        self._backlog_logged = 0.0

    def run(self) -> None:
        """Deliver until :meth:`stop`; attempts under way finish first."""
        concurrency = self.settings.dispatcher_concurrency
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="delivery") as pool:
            while not self.stop_event.is_set():
                try:
                    self._round(pool, concurrency)
                except _DATABASE_DOWN as exc:
                    log.warning(
                        "database unavailable, retrying: %s", str(exc).splitlines()[0] if str(exc) else exc
                    )
                    self.stop_event.wait(_DATABASE_RETRY_SECONDS)

    def _round(self, pool: ThreadPoolExecutor, concurrency: int) -> None:
        """Take as many due deliveries as there are free slots and start sending them."""
        self._log_backlog()
        free = self._free_slots(concurrency)
        if not free:
            # Every slot is busy: take more as soon as one is released.
            self._slot_freed.wait(self.settings.dispatcher_poll_seconds)
            self._slot_freed.clear()
            return
        try:
            taken = self.take(free)
        except BaseException:
            for _ in range(free):
                self._slots.release()
            raise
        for _ in range(free - len(taken)):
            self._slots.release()
        for delivery in taken:
            pool.submit(self._deliver_and_release, delivery)
        if len(taken) < free:
            self.stop_event.wait(self.settings.dispatcher_poll_seconds)

    def stop(self) -> None:
        self.stop_event.set()

    def _free_slots(self, concurrency: int) -> int:
        free = 0
        while free < concurrency and self._slots.acquire(blocking=False):
            free += 1
        return free

    def _deliver_and_release(self, delivery: Taken) -> None:
        try:
            self.deliver(delivery)
        except Exception:  # noqa: BLE001 - a database error is logged; the lease brings the row back
            log.exception("a delivery attempt could not be recorded", extra={"delivery_id": str(delivery.id)})
        finally:
            self._slots.release()
            self._slot_freed.set()

    def take(self, limit: int) -> list[Taken]:
        """Lease up to ``limit`` due deliveries of enabled endpoints."""
        with self.engine.begin() as conn:
            rows = conn.execute(
                _CLAIM, {"lease": timedelta(seconds=self.settings.dispatcher_lease_seconds), "limit": limit}
            ).all()
        return [Taken(**row._asdict()) for row in rows]

    def secrets(self, delivery: Taken) -> list[str]:
        """The secrets that sign: the current one, and the previous one during the overlap."""
        secrets = [self.box.open(delivery.secret, delivery.endpoint_id)]
        until = delivery.previous_secret_until
        if delivery.previous_secret is not None and until is not None and until > delivery.taken_at:
            secrets.append(self.box.open(delivery.previous_secret, delivery.endpoint_id))
        return secrets

    def deliver(self, delivery: Taken) -> Decision:
        """One attempt at ``delivery``, recorded with what follows it."""
        headers = webhooks.signed_headers(
            self.secrets(delivery), delivery.message_id, int(time.time()), delivery.body
        )
        attempted_at = datetime.now(UTC)
        sent = self.sender.send(delivery.url, headers, delivery.body)
        now = datetime.now(UTC)
        decision = decide(
            self.policy, sent.attempt, attempts=delivery.attempts, created_at=delivery.created_at, now=now
        )
        self._record(delivery, sent, decision, attempted_at, now)
        return decision

    def _record(
        self, delivery: Taken, sent: Sent, decision: Decision, attempted_at: datetime, now: datetime
    ) -> None:
        fields = {
            "delivery_id": str(delivery.id),
            "endpoint_id": str(delivery.endpoint_id),
            "webhook_id": delivery.message_id,
            "event_type": delivery.event_type,
            "attempt": delivery.attempts,
            "status_code": sent.attempt.status_code,
            "latency_ms": sent.latency_ms,
        }
        status = "pending" if decision.verdict is Verdict.RETRY else str(decision.verdict)
        with self.engine.begin() as conn:
            conn.execute(
                _RECORD,
                {
                    "delivery_id": delivery.id,
                    "attempt": delivery.attempts,
                    "outcome": status,
                    "retry_at": decision.next_attempt_at,
                    "attempted_at": attempted_at,
                    "status_code": sent.attempt.status_code,
                    "error": sent.attempt.error,
                    "response": sent.response,
                    "latency_ms": sent.latency_ms,
                },
            )
            if decision.verdict is Verdict.DELIVERED:
                conn.execute(_SUCCEEDED, {"endpoint": delivery.endpoint_id})
            else:
                endpoint = conn.execute(_FAILED, {"endpoint": delivery.endpoint_id, "failed_at": now}).first()
                if (
                    endpoint is not None
                    and endpoint.enabled
                    and should_disable(self.policy, endpoint.failing_since, now)
                ):
                    conn.execute(
                        _DISABLE,
                        {
                            "endpoint": delivery.endpoint_id,
                            "reason": "every delivery failed since " + endpoint.failing_since.isoformat(),
                        },
                    )
                    log.warning("disabled a webhook endpoint whose deliveries all fail", extra=fields)
        if decision.verdict is Verdict.DELIVERED:
            log.info("webhook delivered", extra=fields)
        elif decision.verdict is Verdict.FAILED:
            log.warning(
                "webhook delivery failed: %s",
                sent.attempt.error or f"HTTP {sent.attempt.status_code}",
                extra=fields | {"delivery_failed": True},
            )
        else:
            log.info(
                "webhook attempt failed, retrying: %s",
                sent.attempt.error or f"HTTP {sent.attempt.status_code}",
                extra=fields
                | {
                    "next_attempt_at": decision.next_attempt_at.isoformat()
                    if decision.next_attempt_at
                    else None
                },
            )

    def _log_backlog(self) -> None:
        """Every 60 s, the age of the oldest pending delivery (the backlog alert's metric)."""
        if time.monotonic() - self._backlog_logged < 60:
            return
        self._backlog_logged = time.monotonic()
        with self.engine.connect() as conn:
            row = conn.execute(_OLDEST_PENDING).one()
        log.info(
            "webhook backlog",
            extra={"oldest_pending_seconds": float(row.age or 0), "pending_deliveries": int(row.pending)},
        )
