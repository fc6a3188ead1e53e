"""A submission with clip options, through the gateway to downloaded clips: every format
asked for, the card text on the cards, the loudness the platform normalizes to, and the
options shown with the task."""

from __future__ import annotations

import functools
import subprocess

import numpy as np
import pyloudnorm
import pytest

from tests.support.client import PlatformClient, assert_error
from tests.support.media import CARD_MAX_DIFF, frame_pixels, mean_abs_diff, probe_clip
from tests.support.stack import assert_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SAMPLE_RATE = 48000
CARD = {"title": "Zoë Ångström #27", "subtitle": "Slalom: 12 Jan"}


def _content_loudness(path) -> float:
    """The integrated loudness (LUFS, BS.1770-4 by pyloudnorm) of the clip's content:
    its audio without the 1 s cards."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-ss",
            "1",
            "-t",
            "2",
            "-i",
            str(path),
            "-vn",
            "-ac",
            "2",
            "-ar",
            str(SAMPLE_RATE),
        ]
        + ["-f", "f32le", "-"],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    samples = np.frombuffer(raw, dtype="<f4").reshape(-1, 2)
    return float(pyloudnorm.Meter(SAMPLE_RATE).integrated_loudness(samples))


def test_formats_card_text_and_loudness_reach_the_downloaded_clips(
    local_stack, source_server, short_source, tmp_path
):
    athlete = PlatformClient.sign_up(local_stack.base_url, "options")
    alive = functools.partial(assert_alive, local_stack.stack)
    plain = athlete.submit_url(source_server.url(short_source), loudness="off")
    dressed = athlete.submit_url(
        source_server.url(short_source),
        formats=["16:9", {"format": "9:16", "fit": "crop"}],
        card=CARD,
        split="scenes",
    )
    assert dressed["options"]["formats"] == [
        {"format": "16:9", "fit": "pad"},
        {"format": "9:16", "fit": "crop"},
    ], dressed["options"]
    assert dressed["options"]["card"] == CARD
    assert dressed["options"]["loudness"]["target_lufs"] == local_stack.settings.loudness_target_lufs
    assert plain["options"]["loudness"] == "off"

    done = {task["id"]: athlete.wait_for(task["id"], while_waiting=alive) for task in (plain, dressed)}
    assert all(task["status"] == "processed" for task in done.values()), done

    clips = done[dressed["id"]]["clips"]
    assert [(clip["index"], clip["format"]) for clip in clips] == [(1, "16:9"), (1, "9:16")]
    assert len({clip["links"]["download"] for clip in clips}) == 2
    downloaded = {}
    for clip in clips:
        name = clip["format"].replace(":", "x")
        path = athlete.download(clip["links"]["download"], tmp_path / f"{name}.mp4")
        facts = probe_clip(path)
        assert (facts.video_streams, facts.audio_streams) == (1, 1), facts
        downloaded[clip["format"]] = (facts.width, facts.height)
        preview = athlete.download(clip["links"]["preview"], tmp_path / f"{name}-preview.mp4")
        assert probe_clip(preview).audio_streams == 0
        athlete.download(clip["links"]["poster"], tmp_path / f"{name}.jpg")
    assert downloaded == {"16:9": (1280, 720), "9:16": (720, 1280)}

    # The card with text is not the plain logo card the task without options opens on.
    (plain_clip,) = done[plain["id"]]["clips"]
    plain_path = athlete.download(plain_clip["links"]["download"], tmp_path / "plain.mp4")
    dressed_card = frame_pixels(tmp_path / "16x9.mp4", 0)
    assert mean_abs_diff(frame_pixels(plain_path, 0), dressed_card) > CARD_MAX_DIFF

    # The platform's loudness target (on by default) against the source's own level.
    target = local_stack.settings.loudness_target_lufs
    assert abs(_content_loudness(tmp_path / "16x9.mp4") - target) <= 1.0
    assert abs(_content_loudness(plain_path) - target) > 1.0


def test_an_unusable_option_is_refused_before_anything_is_stored(local_stack, source_server, short_source):
    athlete = PlatformClient.sign_up(local_stack.base_url, "badoption")
    response = athlete.session.post(
        athlete.url("/tasks"),
        json={"url": source_server.url(short_source), "formats": ["4:3"]},
        timeout=30,
    )
    assert_error(response, 422, "invalid_option")
    listing = athlete.get("/tasks")
    assert listing.status_code == 200 and listing.json()["tasks"] == []
