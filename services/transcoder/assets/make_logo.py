"""Draws the league's logo card (``logo.png``), committed beside this script.

Run once after changing the design: ``python services/transcoder/assets/make_logo.py``.
Pillow's bundled font keeps the output identical on every machine. Flat colours keep the
PNG small; the pipeline scales it to the clip geometry, so 1280x720 is only a default.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1280, 720
BACKGROUND = (12, 27, 51)
ACCENT = (242, 169, 0)
TEXT = (255, 255, 255)


def draw_logo() -> Image.Image:
    card = Image.new("RGB", (WIDTH, HEIGHT), BACKGROUND)
    draw = ImageDraw.Draw(card)
    cx, cy, radius = WIDTH // 2, 300, 170
    draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), outline=ACCENT, width=16)
    # A stylised run: three rising bars inside the ring.
    for i, bar_height in enumerate((70, 120, 170)):
        left = cx - 100 + i * 75
        draw.rectangle((left, cy + 85 - bar_height, left + 50, cy + 85), fill=ACCENT)
    title = ImageFont.load_default(size=120)
    draw.text((cx, 570), "IDRL", font=title, fill=TEXT, anchor="mm")
    subtitle = ImageFont.load_default(size=40)
    draw.text((cx, 665), "OFFICIAL LEAGUE CLIP", font=subtitle, fill=ACCENT, anchor="mm")
    return card


if __name__ == "__main__":
    target = Path(__file__).with_name("logo.png")
    draw_logo().save(target, optimize=True)
    print(f"wrote {target} ({target.stat().st_size} bytes)")
