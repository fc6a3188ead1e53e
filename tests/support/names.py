"""Names of topics, subscriptions and buckets of their own for one stack or test, so
runs sharing an emulator never see each other's messages or objects (``tests/`` is on
the import path through its conftest)."""

from __future__ import annotations

import uuid


def isolated_names(label: str = "") -> dict[str, str]:
    """Settings naming fresh topics, subscriptions and buckets; ``label`` tells whose
    they are when an emulator is inspected by hand (e.g. "e2e")."""
    suffix = f"{label}-{uuid.uuid4().hex[:10]}" if label else uuid.uuid4().hex[:10]
    return {
        "uploads_bucket": f"idrl-uploads-{suffix}",
        "clips_bucket": f"idrl-clips-{suffix}",
        "topic_video_tasks": f"video-tasks-{suffix}",
        "topic_task_events": f"task-events-{suffix}",
        "subscription_transcoder": f"video-tasks-transcoder-{suffix}",
        "subscription_notifier": f"task-events-notifier-{suffix}",
    }


# The stacks the tests share sign many athletes up from one address (127.0.0.1) within a
# minute, past the per-client sign-up limit of production (30 a minute): these stacks
# raise it, so a test's sign-up never depends on how many others ran before it. An api
# process keeps a user's session cutoff 3 s rather than 30 (the production bound): the
# logout test waits out that window, and its check is the same at any length.
SHARED_STACK_LIMITS = {"signups_per_minute_per_client": "10000", "token_cutoff_cache_seconds": "3"}
