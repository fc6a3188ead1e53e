"""Cards with text in real clips: the card shown is the one drawn from the same text,
on the opening and the closing card, and any text makes a valid clip."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.transcoder.cards import DEFAULT_CARD_FONT, plan_card, render_card
from services.transcoder.pipeline import DEFAULT_LOGO, iter_clips
from services.transcoder.probe import SourceLimits, probe_source
from shared.db import create_engine
from shared.events import CardText, ClipSpec
from shared.lifecycle import TaskStatus
from shared.storage import storage_client
from tests.support.media import as_clip_colour, frame_pixels, make_video, mean_abs_diff, probe_clip
from tests.support.worker import Notifier, insert_task, submit, upload_source, wait_status, worker_thread

LIMITS = SourceLimits(max_bytes=10**9, max_seconds=3600, max_width=7680, max_height=4320)
WIDTH, HEIGHT = 320, 180
# A card frame against its reference (H.264 at CRF 23 on flat colours and text edges);
# two cards whose titles differ, in the rows the text takes.
SAME_CARD_MAX_DIFF = 1.5
OTHER_TITLE_MIN_DIFF = 5.0
ANA = CardText(title="Ana María Pérez #27", subtitle="Regional Sprint 2026")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """1 s, 320x180, silent: clips of 3 s (card, part, card)."""
    return make_video(
        tmp_path_factory.mktemp("cards") / "source.mp4", width=WIDTH, height=HEIGHT, seconds=1, audio=False
    )


def make_clip(source: Path, workdir: Path, card: CardText) -> Path:
    spec = ClipSpec(width=WIDTH, height=HEIGHT, preset="ultrafast", card=card)
    (clip,) = iter_clips(source, probe_source(source, LIMITS), spec, workdir=workdir, ffmpeg_timeout=120)
    return clip.path


def reference(card: CardText, workdir: Path) -> bytes:
    """The card drawn from the same template and text, converted as the clip's is."""
    drawn = workdir / "reference.png"
    render_card(DEFAULT_LOGO, card, (WIDTH, HEIGHT), DEFAULT_CARD_FONT).save(drawn)
    return frame_pixels(as_clip_colour(drawn, workdir / "reference.nut"), 0, WIDTH, HEIGHT)


def text_rows(frame: bytes, card: CardText) -> bytes:
    """The rows under the logo, where the text is."""
    _, top, _, logo_height = plan_card((WIDTH, HEIGHT), (1280, 720), card, lambda line, size: 0).logo_box
    return frame[(top + logo_height) * WIDTH :]


@pytest.fixture(scope="module")
def ana_clip(source, tmp_path_factory) -> Path:
    return make_clip(source, tmp_path_factory.mktemp("ana"), ANA)


def test_opening_and_closing_cards_show_the_drawn_card(ana_clip, tmp_path):
    expected = reference(ANA, tmp_path)
    duration = probe_clip(ana_clip).duration
    for at in (0.1, 0.5, 0.9, duration - 0.9, duration - 0.1):
        assert mean_abs_diff(frame_pixels(ana_clip, at, WIDTH, HEIGHT), expected) < SAME_CARD_MAX_DIFF, at
    # The part itself is not the card.
    assert mean_abs_diff(frame_pixels(ana_clip, 1.5, WIDTH, HEIGHT), expected) > 20


def test_another_title_shows_another_card(source, ana_clip, tmp_path):
    zoe = CardText(title="Zoe Quinn #4", subtitle=ANA.subtitle)
    zoe_clip = make_clip(source, tmp_path, zoe)
    ana_card, zoe_card = (
        frame_pixels(ana_clip, 0.5, WIDTH, HEIGHT),
        frame_pixels(zoe_clip, 0.5, WIDTH, HEIGHT),
    )
    assert mean_abs_diff(text_rows(ana_card, ANA), text_rows(zoe_card, zoe)) > OTHER_TITLE_MIN_DIFF
    assert mean_abs_diff(zoe_card, reference(zoe, tmp_path)) < SAME_CARD_MAX_DIFF


def test_text_with_every_hostile_character_makes_a_valid_clip(source, tmp_path):
    hostile = CardText(
        title="O'Brien: %{pts} \\ ; [x]=1,\n'quoted' \"too\"",
        subtitle="محمد 😀 中文 %{localtime}\x00\x1b",
    )
    clip = make_clip(source, tmp_path, hostile)
    facts = probe_clip(clip)
    assert (facts.width, facts.height, facts.video_streams, facts.audio_streams) == (WIDTH, HEIGHT, 1, 1)
    assert abs(facts.duration - 3.0) <= 1 / 30
    assert (
        mean_abs_diff(frame_pixels(clip, 0.5, WIDTH, HEIGHT), reference(hostile, tmp_path))
        < SAME_CARD_MAX_DIFF
    )


def test_without_text_the_card_is_todays_logo_card(source, tmp_path):
    clip = make_clip(source, tmp_path, CardText(title=" \n "))
    logo = frame_pixels(DEFAULT_LOGO, 0, WIDTH, HEIGHT)
    assert mean_abs_diff(frame_pixels(clip, 0.5, WIDTH, HEIGHT), logo) < 6
    assert not list(tmp_path.glob("card-*.png"))


def test_the_worker_draws_the_text_in_the_configured_font(settings, source, tmp_path):
    """Through the worker (emulators, PostgreSQL): the card shows the text in
    ``CARD_FONT_PATH``'s font, not in the default one."""
    serif = DEFAULT_CARD_FONT.with_name("DejaVuSerif-Bold.ttf")
    tsettings = settings.model_copy(update={"card_font_path": str(serif)})
    engine = create_engine(tsettings)
    try:
        spec = ClipSpec(width=WIDTH, height=HEIGHT, preset="ultrafast", card=ANA)
        task = insert_task(engine, upload_source(tsettings, source), spec)
        with Notifier(tsettings, engine).running(), worker_thread(tsettings, engine):
            submit(tsettings, task)
            wait_status(engine, task.task_id, TaskStatus.PROCESSED)
    finally:
        engine.dispose()
    clip = tmp_path / "part-01.mp4"
    storage_client().bucket(tsettings.clips_bucket).blob(
        f"tasks/{task.task_id}/part-01.mp4"
    ).download_to_filename(str(clip))
    shown = frame_pixels(clip, 0.5, WIDTH, HEIGHT)
    drawn = {}
    for name, font in (("serif", serif), ("sans", DEFAULT_CARD_FONT)):
        render_card(DEFAULT_LOGO, ANA, (WIDTH, HEIGHT), font).save(tmp_path / f"{name}.png")
        drawn[name] = frame_pixels(
            as_clip_colour(tmp_path / f"{name}.png", tmp_path / f"{name}.nut"), 0, WIDTH, HEIGHT
        )
    assert mean_abs_diff(shown, drawn["serif"]) < SAME_CARD_MAX_DIFF
    assert mean_abs_diff(text_rows(shown, ANA), text_rows(drawn["sans"], ANA)) > 2 * SAME_CARD_MAX_DIFF
