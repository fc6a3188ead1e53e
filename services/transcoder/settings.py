"""The transcoder's settings: the platform's, plus the few knobs only the worker reads.

The extra fields follow the same rule as :class:`shared.config.Settings` (environment
variable = upper-cased field name) and belong there once the shared module takes them.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache

from shared.config import Settings


class TranscoderSettings(Settings):
    # Pub/Sub: how far each lease extension reaches. Short, so the message of a worker
    # that dies comes back within this many seconds (minimum 10).
    transcoder_lease_extension_seconds: int = 20
    fetch_total_timeout_seconds: float = 600.0  # a whole URL download, beyond read timeouts
    probe_timeout_seconds: float = 60.0
    retry_initial_seconds: float = 1.0  # first backoff of a transient error; doubles, max 30 s
    # After publishing an outcome, how long to wait for the notifier to record it before
    # letting go of the task (another worker that then takes it sees the outcome).
    outcome_confirm_seconds: float = 30.0

    @property
    def concurrency(self) -> int:
        """Clips processed at once: the setting, or one per two vCPUs."""
        if self.transcoder_concurrency > 0:
            return self.transcoder_concurrency
        return max(1, (os.cpu_count() or 1) // 2)

    @property
    def max_lease_seconds(self) -> float:
        """The longest a task may legitimately take: fetch and probe, then every clip of
        the longest allowed source at the ffmpeg limit each, then the drain grace."""
        most_parts = math.ceil(self.max_source_seconds / 20.0)
        return (
            self.fetch_total_timeout_seconds
            + self.probe_timeout_seconds
            + most_parts * self.ffmpeg_timeout_seconds
            + self.drain_grace_seconds
        )


def transcoder_settings(base: Settings | None = None) -> TranscoderSettings:
    """The transcoder's settings: ``base``'s values (tests), else the environment's."""
    if base is None:
        return _from_environment()
    return TranscoderSettings(**base.model_dump())


@lru_cache(maxsize=1)
def _from_environment() -> TranscoderSettings:
    return TranscoderSettings()
