"""The opening and closing card with the task's text on it (:class:`shared.events.CardText`).

The card is drawn here with Pillow, once per task and frame size, and handed to ffmpeg
as an image input like the bundled logo: nothing of the text is ever in ffmpeg's
command line or filter graph, so no character of it can mean anything to ffmpeg. A
spec without text keeps the logo itself as the card (nothing is drawn).

Layout (:func:`plan_card`, pure; the sizes are fractions of the frame's short side, so
a 16:9, 9:16 and 1:1 card read alike): the title, then the subtitle, centred, under
the logo fitted without stretching into the height the text leaves free, the whole
group centred on black (the colour ffmpeg pads today's card with). A newline is a line
break; each text keeps at most :data:`MAX_LINES` lines. A line too wide for the frame
shrinks the whole text, is broken onto two lines at a space where it would otherwise
shrink below :data:`WRAP_BELOW` of its size, and past :data:`MIN_SCALE` of its size is
cut with an ellipsis: never cropped.

The text is cleaned before it is measured (:func:`card_lines`): control characters
and lone surrogates are dropped, whitespace runs become one space, and a line is cut
at :data:`MAX_LINE_CHARS` characters whatever the api let through. Glyphs the font
lacks are drawn as the font's missing-glyph box. Shaping and right-to-left order come
from Pillow's Raqm layout (HarfBuzz, FriBiDi) where Pillow has it; otherwise Pillow's
basic layout draws the characters in stored order (docs/transcoder.md).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Final

from PIL import Image, ImageDraw, ImageFont, features

from shared.config import Settings
from shared.events import CardText

# DejaVu Sans Bold (Debian's fonts-dejavu-core): Latin, Greek, Cyrillic, Armenian,
# Georgian, Hebrew and Arabic in one file. Where it is: the setting's default.
DEFAULT_CARD_FONT: Final = Path(str(Settings.model_fields["card_font_path"].default))

# Sizes as fractions of the frame's short side.
TITLE_SIZE: Final = 0.09
SUBTITLE_SIZE: Final = 0.055
MARGIN: Final = 0.06  # around the text, and between the logo and the text
BLOCK_GAP: Final = 0.02  # between the title and the subtitle
LINE_SPACING: Final = 1.25  # line pitch, in font sizes

MIN_SCALE: Final = 0.5  # a text shrinks to half its size at most, then is cut
WRAP_BELOW: Final = 0.75  # a line that would shrink more than this is broken in two
MAX_LINES: Final = 2  # of the title, and of the subtitle
MAX_LINE_CHARS: Final = 120  # twice what the api accepts: a bound on the work
ELLIPSIS: Final = "\u2026"

BACKGROUND: Final = (0, 0, 0)
TITLE_COLOUR: Final = (255, 255, 255)
SUBTITLE_COLOUR: Final = (200, 200, 200)

# The width a line takes at a font size, in pixels.
Measure = Callable[[str, int], float]


class CardFontMissing(RuntimeError):
    """The card font cannot be read: the worker cannot draw cards with text."""


def card_lines(text: str | None) -> tuple[str, ...]:
    """The lines of ``text`` as they are drawn: split at line breaks (``\\n``, ``\\r\\n``,
    U+2028...), without control characters or lone surrogates, whitespace runs as one
    space, blank lines dropped; at most :data:`MAX_LINES` lines of at most
    :data:`MAX_LINE_CHARS` characters, what is left off marked with an ellipsis."""
    if not text:
        return ()
    lines = []
    for raw in text.splitlines():
        kept = "".join(ch for ch in raw if unicodedata.category(ch) not in ("Cc", "Cs") or ch == "\t")
        line = " ".join(kept.split())
        if line:
            lines.append(line)
    cut = len(lines) > MAX_LINES
    lines = lines[:MAX_LINES]
    for i, line in enumerate(lines):
        if len(line) > MAX_LINE_CHARS:
            lines[i] = line[: MAX_LINE_CHARS - 1].rstrip() + ELLIPSIS
    if cut and not lines[-1].endswith(ELLIPSIS):
        lines[-1] += ELLIPSIS
    return tuple(lines)


def has_text(card: CardText | None) -> bool:
    """Whether ``card`` puts anything on the card (else the card is the logo alone)."""
    return card is not None and bool(card_lines(card.title) or card_lines(card.subtitle))


@dataclass(frozen=True)
class TextBlock:
    """The title or the subtitle as drawn: its lines, font size and colour, and the
    vertical centre of each line."""

    lines: tuple[str, ...]
    size: int
    colour: tuple[int, int, int]
    centres: tuple[int, ...]


@dataclass(frozen=True)
class CardLayout:
    """Where everything goes on a card of ``frame`` pixels."""

    frame: tuple[int, int]
    logo_box: tuple[int, int, int, int]  # left, top, width, height
    blocks: tuple[TextBlock, ...]


def fit_text(lines: tuple[str, ...], size: int, width: int, measure: Measure) -> tuple[tuple[str, ...], int]:
    """``lines`` at the largest size up to ``size`` at which each fits ``width``, down
    to ``MIN_SCALE * size``. A single line that would shrink below ``WRAP_BELOW * size``
    is broken at a space onto two lines where that lets it stay larger; a line still
    too wide at the smallest size is cut and ends with an ellipsis. Returns the lines
    and the size."""
    fitted = _fitting_size(lines, size, width, measure)
    if len(lines) == 1 < MAX_LINES and fitted < WRAP_BELOW * size:
        wrapped = _halves(lines[0], size, measure)
        if wrapped is not None:
            # Either half is narrower than the line: two lines are at least as large,
            # and show more of a line that would otherwise be cut.
            wrapped_size = _fitting_size(wrapped, size, width, measure)
            if wrapped_size > fitted or measure(lines[0], fitted) > width:
                lines, fitted = wrapped, wrapped_size
    return tuple(_cut_to_width(line, fitted, width, measure) for line in lines), fitted


def _fitting_size(lines: tuple[str, ...], size: int, width: int, measure: Measure) -> int:
    """The largest size up to ``size``, and at least ``MIN_SCALE * size``, at which
    every line fits ``width`` (the smallest when some line fits at none)."""
    smallest = max(1, round(size * MIN_SCALE))
    fitted = size
    for line in lines:
        needed = measure(line, fitted)
        if needed > width:
            # Widths grow about linearly with the size; hinting may round up, so step down.
            fitted = max(smallest, int(fitted * width / needed))
            while fitted > smallest and measure(line, fitted) > width:
                fitted -= 1
    return fitted


def _halves(line: str, size: int, measure: Measure) -> tuple[str, str] | None:
    """``line`` broken at the space that makes its wider half narrowest; None without a
    space to break at."""
    best: tuple[float, tuple[str, str]] | None = None
    for index, character in enumerate(line):
        if character == " ":
            halves = (line[:index].rstrip(), line[index + 1 :].lstrip())
            if all(halves):
                widest = max(measure(half, size) for half in halves)
                if best is None or widest < best[0]:
                    best = (widest, halves)
    return best[1] if best is not None else None


def _cut_to_width(line: str, size: int, width: int, measure: Measure) -> str:
    if measure(line, size) <= width:
        return line
    # The longest start of the line that fits with the ellipsis (binary search on length).
    low, high = 0, len(line)
    while low < high:
        middle = (low + high + 1) // 2
        if measure(line[:middle].rstrip() + ELLIPSIS, size) <= width:
            low = middle
        else:
            high = middle - 1
    return line[:low].rstrip() + ELLIPSIS


def plan_card(
    frame: tuple[int, int], logo_size: tuple[int, int], card: CardText, measure: Measure
) -> CardLayout:
    """The layout of a card of ``frame`` (width, height) pixels: the logo of
    ``logo_size`` and ``card``'s title and subtitle, every line measured by ``measure``."""
    width, height = frame
    short = min(width, height)
    margin = round(short * MARGIN)
    text_width = max(1, width - 2 * margin)

    texts = []
    for text, share, colour in (
        (card.title, TITLE_SIZE, TITLE_COLOUR),
        (card.subtitle, SUBTITLE_SIZE, SUBTITLE_COLOUR),
    ):
        lines = card_lines(text)
        if lines:
            fitted, size = fit_text(lines, max(1, round(short * share)), text_width, measure)
            texts.append((fitted, size, colour))

    pitches = [max(1, round(size * LINE_SPACING)) for _, size, _ in texts]
    gap = round(short * BLOCK_GAP)
    text_height = sum(len(lines) * pitch for (lines, _, _), pitch in zip(texts, pitches))
    text_height += gap * max(0, len(texts) - 1)
    logo_gap = margin if texts else 0

    box_height = max(1, height - 2 * margin - logo_gap - text_height) if texts else height
    logo_width, logo_height = _fitted(logo_size, (width, box_height))
    top = max(0, (height - (logo_height + logo_gap + text_height)) // 2)
    logo_box = ((width - logo_width) // 2, top, logo_width, logo_height)

    blocks = []
    y = top + logo_height + logo_gap
    for (lines, size, colour), pitch in zip(texts, pitches):
        centres = tuple(y + i * pitch + pitch // 2 for i in range(len(lines)))
        blocks.append(TextBlock(lines=lines, size=size, colour=colour, centres=centres))
        y += len(lines) * pitch + gap
    return CardLayout(frame=frame, logo_box=logo_box, blocks=tuple(blocks))


def _fitted(size: tuple[int, int], box: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled to fit ``box`` keeping its aspect ratio (ffmpeg's
    ``force_original_aspect_ratio=decrease``), at least a pixel each way."""
    scale = min(box[0] / size[0], box[1] / size[1])
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


@lru_cache(maxsize=64)
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(str(path), size)
    except OSError as exc:
        raise CardFontMissing(f"the card font {path} cannot be read: {exc}") from None


def check_card_font(path: Path) -> str:
    """Raise :class:`CardFontMissing` unless ``path`` is a font Pillow can draw with;
    the layout engine it will use (``raqm``: shaping and right-to-left; ``basic``)."""
    if not path.is_file():
        raise CardFontMissing(f"the card font {path} does not exist (CARD_FONT_PATH)")
    _font(path, 12)
    return layout_engine()


def layout_engine() -> str:
    """``raqm`` where Pillow has Raqm with FriBiDi (shaping, right-to-left), else ``basic``."""
    return "raqm" if features.check("raqm") and features.check("fribidi") else "basic"


@lru_cache(maxsize=4)
def _logo_picture(path: Path, modified_ns: int) -> Image.Image:
    """The logo decoded once per worker (and again should the file change)."""
    with Image.open(path) as opened:
        return opened.convert("RGBA" if opened.has_transparency_data else "RGB")


def render_card(logo: Path, card: CardText, frame: tuple[int, int], font: Path) -> Image.Image:
    """The card of ``frame`` (width, height) pixels with ``card``'s text, as RGB."""

    def measure(line: str, size: int) -> float:
        return _font(font, size).getlength(line)

    picture = _logo_picture(logo, logo.stat().st_mtime_ns)
    layout = plan_card(frame, picture.size, card, measure)
    canvas = Image.new("RGB", frame, BACKGROUND)
    left, top, logo_width, logo_height = layout.logo_box
    # Bicubic, as ffmpeg scales the logo of a card without text.
    fitted = picture.resize((logo_width, logo_height), Image.Resampling.BICUBIC)
    canvas.paste(fitted, (left, top), fitted if fitted.mode == "RGBA" else None)
    draw = ImageDraw.Draw(canvas)
    for block in layout.blocks:
        typeface = _font(font, block.size)
        for line, centre in zip(block.lines, block.centres):
            draw.text((frame[0] / 2, centre), line, font=typeface, fill=block.colour, anchor="mm")
    return canvas


def card_images(
    card: CardText | None,
    logo: Path,
    frames: Mapping[str, tuple[int, int]],
    workdir: Path,
    font: Path = DEFAULT_CARD_FONT,
) -> dict[str, Path]:
    """The card image of each format in ``frames`` (format -> width, height): the logo
    itself without text, else a PNG drawn in ``workdir``, once per frame size."""
    if not has_text(card):
        return dict.fromkeys(frames, logo)
    assert card is not None
    drawn: dict[tuple[int, int], Path] = {}
    for frame in frames.values():
        if frame not in drawn:
            path = workdir / f"card-{frame[0]}x{frame[1]}.png"
            # A fast compression level: the file lives for one task, and ffmpeg reads it once a part.
            render_card(logo, card, frame, font).save(path, format="PNG", compress_level=1)
            drawn[frame] = path
    return {name: drawn[frame] for name, frame in frames.items()}
