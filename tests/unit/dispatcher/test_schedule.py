"""The dispatcher's retry decision and the Standard Webhooks signature, as pure units."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidTag
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from services.dispatcher.schedule import (
    Attempt,
    RetryPolicy,
    Verdict,
    decide,
    nominal_pause,
    retry_after_seconds,
    should_disable,
)
from shared import webhooks
from shared.config import Settings

POLICY = RetryPolicy(initial=10, maximum=4 * 3600, window=24 * 3600, disable_after=5 * 86400)
T0 = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "attempt, verdict",
    [
        (Attempt(200), Verdict.DELIVERED),
        (Attempt(204), Verdict.DELIVERED),
        (Attempt(None, error="connection refused"), Verdict.RETRY),
        (Attempt(500), Verdict.RETRY),
        (Attempt(503), Verdict.RETRY),
        (Attempt(408), Verdict.RETRY),
        (Attempt(429), Verdict.RETRY),
        (Attempt(400), Verdict.FAILED),
        (Attempt(404), Verdict.FAILED),
        (Attempt(410), Verdict.FAILED),
        (Attempt(302), Verdict.FAILED),  # redirects are not followed
    ],
)
def test_each_answer_gets_its_verdict(attempt, verdict):
    assert decide(POLICY, attempt, attempts=1, created_at=T0, now=T0).verdict is verdict


def test_the_first_retry_comes_within_30_seconds():
    for draw in (lambda lo, hi: lo, lambda lo, hi: hi):
        decision = decide(POLICY, Attempt(500), attempts=1, created_at=T0, now=T0, draw=draw)
        assert decision.next_attempt_at is not None
        assert timedelta(0) < decision.next_attempt_at - T0 <= timedelta(seconds=30)


def test_pauses_grow_and_stop_at_the_maximum():
    pauses = [nominal_pause(POLICY, n) for n in range(1, 12)]
    assert pauses == sorted(pauses) and pauses[0] == 10 and pauses[-1] == 4 * 3600


def test_jitter_draws_between_half_and_all_of_the_pause():
    seen = []
    decide(
        POLICY,
        Attempt(500),
        attempts=3,
        created_at=T0,
        now=T0,
        draw=lambda lo, hi: seen.append((lo, hi)) or lo,
    )
    assert seen == [(45.0, 90.0)]


def test_retries_span_the_whole_window_whatever_the_jitter():
    """Failing every time, with the shortest pauses jitter can draw: the delivery is still
    attempted past 24 h after its creation, and fails only then."""
    now, attempts = T0, 0
    while True:
        attempts += 1
        decision = decide(
            POLICY, Attempt(503), attempts=attempts, created_at=T0, now=now, draw=lambda lo, hi: lo
        )
        if decision.verdict is Verdict.FAILED:
            break
        assert decision.next_attempt_at is not None
        now = decision.next_attempt_at
    assert now - T0 >= timedelta(hours=24)
    assert attempts < 40


def test_retry_after_sets_the_pause_in_seconds_or_as_a_date():
    decision = decide(POLICY, Attempt(429, retry_after="120"), attempts=1, created_at=T0, now=T0)
    assert decision.next_attempt_at == T0 + timedelta(seconds=120)
    assert retry_after_seconds("Tue, 01 Dec 2026 00:01:00 GMT", T0) == 60
    assert retry_after_seconds("soon", T0) is None
    capped = decide(POLICY, Attempt(503, retry_after="999999"), attempts=1, created_at=T0, now=T0)
    assert capped.next_attempt_at == T0 + timedelta(seconds=POLICY.maximum)


def test_an_endpoint_failing_for_the_whole_period_is_disabled():
    assert not should_disable(POLICY, None, T0)
    assert not should_disable(POLICY, T0, T0 + timedelta(days=4, hours=23))
    assert should_disable(POLICY, T0, T0 + timedelta(days=5))


def test_signatures_verify_with_the_standard_webhooks_library():
    secret = webhooks.new_secret()
    body = webhooks.event_body("task.queued", {"id": "t"})
    timestamp = int(datetime.now(UTC).timestamp())
    headers = webhooks.signed_headers([secret], "msg_1", timestamp, body)
    verified = Webhook(secret).verify(body, headers)
    assert verified["type"] == "task.queued" and verified["data"] == {"id": "t"}
    with pytest.raises(WebhookVerificationError):
        Webhook(webhooks.new_secret()).verify(body, headers)


def test_two_secrets_sign_side_by_side_and_each_verifies():
    old, new = webhooks.new_secret(), webhooks.new_secret()
    body = "{}"
    headers = webhooks.signed_headers([new, old], "msg_2", int(datetime.now(UTC).timestamp()), body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify(body, headers)


def test_secrets_are_sealed_per_endpoint():
    box = webhooks.SecretBox(Settings())
    endpoint, other = uuid.uuid4(), uuid.uuid4()
    secret = webhooks.new_secret()
    sealed = box.seal(secret, endpoint)
    assert secret.encode() not in sealed
    assert box.open(sealed, endpoint) == secret
    with pytest.raises(InvalidTag):  # another row's id does not decrypt it
        box.open(sealed, other)
