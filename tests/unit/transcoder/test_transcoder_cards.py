"""Cards with text: cleaning and laying out the text (pure), drawing it with Pillow, and
the clip command that reads the drawn card as an image, never the text (built, not run;
the clips are checked in tests/integration/transcoder/test_transcoder_cards.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from services.transcoder.cards import (
    DEFAULT_CARD_FONT,
    ELLIPSIS,
    MAX_LINE_CHARS,
    MIN_SCALE,
    TITLE_SIZE,
    CardFontMissing,
    card_images,
    card_lines,
    check_card_font,
    fit_text,
    has_text,
    plan_card,
    render_card,
)
from services.transcoder.graph import build_clip_command
from services.transcoder.pipeline import DEFAULT_LOGO
from services.transcoder.plan import Part
from services.transcoder.worker import Worker
from shared.config import Settings
from shared.events import CardText, ClipSpec
from tests.support.media import source_info

FRAMES = [(1280, 720), (720, 1280), (1080, 1080), (320, 180), (16, 16)]
HOSTILE = [
    "O'Brien",
    "time: 12:03",
    "%{pts} %{localtime} %%",
    "back\\slash\\",
    "a;b,c[d]=e",
    "first line\nsecond line\nthird line",
    "محمد عبد الله",
    "שלום עולם 2026",
    "😀🏃‍♀️🇺🇾",
    "中文 日本語 한국어 ไทย हिन्दी",
    "\x00\x07\x1b[31m\x7f",
    "\u202etxet desrever\u202c",
    "\ud800 lone surrogate",
    "   \t  ",
    "",
]


def fixed_width(line: str, size: int) -> float:
    """A monospaced font: every character half as wide as the size."""
    return len(line) * size * 0.5


# --- cleaning -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, lines",
    [
        (None, ()),
        ("", ()),
        ("   \t ", ()),
        ("\x00\x07\x1b", ()),
        ("Ana  Pérez", ("Ana Pérez",)),
        ("  #27\t", ("#27",)),
        ("A\x00B\x1bC", ("ABC",)),
        ("one\ntwo", ("one", "two")),
        ("one\r\ntwo", ("one", "two")),
        ("one\u2028two", ("one", "two")),
        ("one\n\n  \ntwo", ("one", "two")),
        ("one\ntwo\nthree", ("one", "two" + ELLIPSIS)),
        ("\ud800x", ("x",)),
        ("محمد", ("محمد",)),
    ],
)
def test_card_lines(text, lines):
    assert card_lines(text) == lines


def test_a_very_long_text_is_cut_to_a_bounded_line():
    (line,) = card_lines("W" * 10_000)
    assert len(line) == MAX_LINE_CHARS and line.endswith(ELLIPSIS)


@pytest.mark.parametrize(
    "card, expected",
    [
        (None, False),
        (CardText(), False),
        (CardText(title="  ", subtitle="\n\t"), False),
        (CardText(title="\x00"), False),
        (CardText(subtitle="Finals"), True),
        (CardText(title="Ana"), True),
    ],
)
def test_has_text(card, expected):
    assert has_text(card) is expected


# --- layout ---------------------------------------------------------------------------------


def test_text_that_fits_keeps_its_size():
    assert fit_text(("Ana",), 60, 1000, fixed_width) == (("Ana",), 60)


def test_text_too_wide_shrinks_to_fit():
    lines, size = fit_text(("x" * 40, "short"), 60, 1000, fixed_width)  # 40 * 30 = 1200 px at 60
    assert lines == ("x" * 40, "short")
    assert 30 <= size < 60
    assert fixed_width("x" * 40, size) <= 1000
    assert fixed_width("x" * 40, size + 1) > 1000  # the largest size that fits


def test_text_too_wide_at_the_smallest_size_is_cut_with_an_ellipsis():
    (line,), size = fit_text(("x" * 200,), 60, 1000, fixed_width)
    assert size == round(60 * MIN_SCALE)
    assert line.endswith(ELLIPSIS) and line.startswith("xxx")
    assert fixed_width(line, size) <= 1000
    assert fixed_width("x" * (len(line)) + ELLIPSIS, size) > 1000  # nothing more fits


def test_a_line_that_would_shrink_much_is_broken_in_two_at_a_space():
    name = "Ana María Pérez González de la Fuente"  # 37 characters: 1110 px at 60
    lines, size = fit_text((name,), 60, 600, fixed_width)
    assert lines == ("Ana María Pérez", "González de la Fuente")  # the wider half narrowest
    assert size == 57 and all(fixed_width(line, size) <= 600 for line in lines)  # one line: 32


def test_a_line_that_shrinks_a_little_stays_one_line():
    line = "x" * 22 + " y"  # 720 px at 60: fits at 50
    assert fit_text((line,), 60, 600, fixed_width) == ((line,), 50)


def test_two_lines_are_not_broken_further():
    lines, size = fit_text(("x" * 30 + " x", "y"), 60, 600, fixed_width)
    assert len(lines) == 2 and size < 45


def test_a_line_too_long_even_in_two_is_broken_and_cut():
    lines, size = fit_text(("word " * 40,), 60, 600, fixed_width)
    assert len(lines) == 2 and size == 30
    assert lines[-1].endswith(ELLIPSIS) and all(fixed_width(line, size) <= 600 for line in lines)


@pytest.mark.parametrize("frame", FRAMES)
def test_layout_stays_in_the_frame_with_the_logo_above_the_text(frame):
    card = CardText(title="Ana María Pérez #27", subtitle="Regional Sprint\n2026-11-28")
    layout = plan_card(frame, (1280, 720), card, fixed_width)
    width, height = frame
    left, top, logo_width, logo_height = layout.logo_box
    assert left >= 0 and left + logo_width <= width and top >= 0 and top + logo_height <= height
    assert abs(logo_width / logo_height - 16 / 9) < 2 / min(logo_width, logo_height) + 0.01
    title, subtitle = layout.blocks
    assert (len(title.lines), len(subtitle.lines)) == (1, 2)
    assert top + logo_height <= title.centres[0] <= title.centres[-1] < subtitle.centres[0] <= height
    assert title.size >= subtitle.size
    for block in layout.blocks:
        for line in block.lines:
            assert fixed_width(line, block.size) <= width


def test_the_font_size_follows_the_short_side():
    card = CardText(title="Ana")
    sizes = {frame: plan_card(frame, (1280, 720), card, fixed_width).blocks[0].size for frame in FRAMES[:3]}
    assert sizes[(1280, 720)] == sizes[(720, 1280)] == round(720 * TITLE_SIZE)
    assert sizes[(1080, 1080)] == round(1080 * TITLE_SIZE)


def test_a_card_with_only_a_subtitle_has_one_block():
    layout = plan_card((1280, 720), (1280, 720), CardText(subtitle="Finals"), fixed_width)
    assert [block.lines for block in layout.blocks] == [("Finals",)]


# --- drawing --------------------------------------------------------------------------------


def test_the_card_font_is_checked_at_start(tmp_path):
    assert check_card_font(DEFAULT_CARD_FONT) in ("raqm", "basic")
    with pytest.raises(CardFontMissing, match="does not exist"):
        check_card_font(tmp_path / "missing.ttf")
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"not a font")
    with pytest.raises(CardFontMissing, match="cannot be read"):
        check_card_font(not_a_font)


def test_a_worker_without_its_card_font_stops_at_start(tmp_path):
    settings = Settings(card_font_path=str(tmp_path / "missing.ttf"))
    # Nothing is reached before the check: no database, storage or Pub/Sub client.
    worker = Worker(settings, engine=None, storage_client=None, publisher=None)
    with pytest.raises(SystemExit, match="missing.ttf does not exist"):
        worker.run(threading.Event())


@pytest.mark.parametrize("title", HOSTILE)
@pytest.mark.parametrize("frame", [(1280, 720), (720, 1280), (16, 16)])
def test_any_text_draws_a_card_of_the_frame(frame, title):
    # Built without validation: the drawing copes with what the api would refuse too.
    card = render_card(
        DEFAULT_LOGO, CardText.model_construct(title=title, subtitle=title), frame, DEFAULT_CARD_FONT
    )
    assert (card.size, card.mode) == (frame, "RGB")


def test_a_long_text_draws_within_the_margins():
    card = CardText.model_construct(title="W" * 10_000, subtitle="x " * 5_000)
    image = render_card(DEFAULT_LOGO, card, (1280, 720), DEFAULT_CARD_FONT)
    band = image.crop((0, 600, 1280, 720)).convert("L")
    left, _, right, _ = band.point(lambda value: 255 if value > 60 else 0).getbbox()
    assert left >= 30 and right <= 1250


def test_the_text_is_drawn_under_the_logo():
    ana = render_card(DEFAULT_LOGO, CardText(title="Ana"), (1280, 720), DEFAULT_CARD_FONT)
    zoe = render_card(DEFAULT_LOGO, CardText(title="Zoe"), (1280, 720), DEFAULT_CARD_FONT)
    changed = ImageChops.difference(ana, zoe).convert("L").point(lambda value: 255 if value > 60 else 0)
    left, top, right, bottom = changed.getbbox()
    assert top > 360 and bottom < 720 - 30  # the title, in the lower half, clear of the edge
    assert abs((left + right) / 2 - 640) < 40  # centred


# --- the clip command -----------------------------------------------------------------------

INFO = source_info(duration=3.0, width=320, height=180, display_width=320, display_height=180)


def clip_args(spec: ClipSpec, workdir: Path) -> list[str]:
    cards = card_images(spec.card, DEFAULT_LOGO, {"16:9": (spec.width, spec.height)}, workdir)
    return build_clip_command(
        workdir / "source",
        INFO,
        Part(1, 0.0, 3.0),
        spec,
        cards["16:9"],
        workdir / "part-01.mp4",
        workdir / "part-01.jpg",
    ).args


def test_without_text_the_card_is_the_logo_itself(tmp_path):
    assert card_images(None, DEFAULT_LOGO, {"16:9": (1280, 720)}, tmp_path) == {"16:9": DEFAULT_LOGO}
    assert card_images(CardText(title=" "), DEFAULT_LOGO, {"16:9": (1280, 720)}, tmp_path) == {
        "16:9": DEFAULT_LOGO
    }
    assert not list(tmp_path.iterdir())  # nothing drawn
    assert clip_args(ClipSpec(), tmp_path) == clip_args(ClipSpec(card=CardText()), tmp_path)
    assert any(arg.endswith(str(DEFAULT_LOGO)) for arg in clip_args(ClipSpec(), tmp_path))


def test_a_card_is_drawn_once_per_frame_size(tmp_path):
    frames = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1080, 1080), "other": (1280, 720)}
    cards = card_images(CardText(title="Ana"), DEFAULT_LOGO, frames, tmp_path)
    assert cards["16:9"] == cards["other"] != cards["9:16"] != cards["1:1"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "card-1080x1080.png",
        "card-1280x720.png",
        "card-720x1280.png",
    ]
    for name, frame in frames.items():
        with Image.open(cards[name]) as image:
            assert image.size == frame


@pytest.mark.parametrize("title", [text for text in HOSTILE if card_lines(text)])
def test_the_text_never_reaches_the_command_line(tmp_path, title):
    spec = ClipSpec(width=320, height=180, card=CardText.model_construct(title="Q7X" + title, subtitle=title))
    args = clip_args(spec, tmp_path)
    assert any(arg.endswith("card-320x180.png") for arg in args)
    command = "\n".join(args)
    assert "Q7X" not in command
    for line in card_lines(title):
        assert len(line) < 3 or line not in command, line
