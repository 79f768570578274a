"""Annotated pictures, drawn with Pillow's built-in font (never a font download)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
    (220, 190, 255),
]


def colour(i: int) -> tuple[int, int, int]:
    """The drawing colour of class or track ``i`` (the palette repeats)."""
    return PALETTE[i % len(PALETTE)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def draw_caption(rgb: np.ndarray, lines: Sequence[str]):
    """The image with a caption box of ``lines`` in the top-left corner (a PIL image)."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(rgb)
    size = max(10, min(img.size) // 18)
    font = _font(size)
    draw = ImageDraw.Draw(img, "RGBA")
    y = 2
    for line in lines:
        l, t, r, b = draw.textbbox((4, y), line, font=font)
        draw.rectangle((l - 2, t - 2, r + 2, b + 2), fill=(0, 0, 0, 160))
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y = int(b) + 4
    return img
