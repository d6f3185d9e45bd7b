"""The result as a picture: the tumor's key slice in a lung window with its outline, and the
result's sentences in a band below the image (Pillow, its built-in font). Pixels only; the
DICOM around them is ``result_image``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LUNG_WINDOW = (-600.0, 1500.0)       # centre, width (HU)
WIDTH = 512                          # the picture's width in pixels
TEXT_SIZE, WARNING_SIZE = 15, 18
MARGIN, LINE_GAP = 10, 5
TEXT_COLOUR, WARNING_COLOUR = (255, 255, 255), (255, 60, 60)
PRIMARY_RGB, OTHER_RGB = (230, 40, 40), (240, 200, 0)   # the SEG's recommended colours


@dataclass(frozen=True)
class Outline:
    points: np.ndarray               # (n, 2) column, row in the slice's pixel coordinates
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Caption:
    lines: tuple[str, ...]           # the result, the model, the date
    warning: str                     # drawn first, larger and red (e.g. NOT FOR CLINICAL USE)


def lung_window(hu: np.ndarray) -> np.ndarray:
    """HU as 8-bit grey in the lung window."""
    centre, width = LUNG_WINDOW
    grey = (hu - (centre - width / 2)) / width * 255.0
    return np.clip(grey, 0, 255).astype(np.uint8)


def render(slice_hu: np.ndarray | None, pixel_spacing: tuple[float, float],
           outlines: Sequence[Outline], caption: Caption) -> np.ndarray:
    """The picture as RGB uint8 (rows, columns, 3): the slice (square pixels, WIDTH wide) with
    its outlines, above the caption; without a slice the caption alone."""
    band = _caption_band(caption)
    if slice_hu is None:
        return np.asarray(band)
    picture = _slice_picture(slice_hu, pixel_spacing, outlines)
    canvas = Image.new("RGB", (WIDTH, picture.height + band.height))
    canvas.paste(picture, (0, 0))
    canvas.paste(band, (0, picture.height))
    return np.asarray(canvas)


def _slice_picture(slice_hu: np.ndarray, pixel_spacing: tuple[float, float],
                   outlines: Sequence[Outline]) -> Image.Image:
    rows, columns = slice_hu.shape
    row_mm, column_mm = pixel_spacing
    scale_x = WIDTH / columns
    scale_y = scale_x * row_mm / column_mm          # square pixels on the picture
    height = max(1, round(rows * scale_y))
    picture = Image.fromarray(lung_window(slice_hu)).resize((WIDTH, height),
                                                           Image.Resampling.BILINEAR)
    picture = picture.convert("RGB")
    draw = ImageDraw.Draw(picture)
    for outline in outlines:
        points = [(float(c) * scale_x, float(r) * scale_y) for c, r in outline.points]
        if len(points) > 1:
            draw.line(points, fill=outline.rgb, width=2, joint="curve")
    return picture


def _caption_band(caption: Caption) -> Image.Image:
    font = ImageFont.load_default(size=TEXT_SIZE)
    warning_font = ImageFont.load_default(size=WARNING_SIZE)
    rows = [(line, warning_font, WARNING_COLOUR) for line in
            _wrapped(caption.warning, warning_font)]
    rows += [(line, font, TEXT_COLOUR) for text in caption.lines for line in _wrapped(text, font)]
    heights = [_line_height(f) for _, f, _ in rows]
    band = Image.new("RGB", (WIDTH, 2 * MARGIN + sum(heights) + LINE_GAP * len(rows)))
    draw = ImageDraw.Draw(band)
    y = MARGIN
    for (line, f, colour), height in zip(rows, heights):
        draw.text((MARGIN, y), line, font=f, fill=colour)
        y += height + LINE_GAP
    return band


def _line_height(font) -> int:
    left, top, right, bottom = font.getbbox("Ag")
    return int(bottom)


def _wrapped(text: str, font) -> list[str]:
    """``text`` in lines that fit the picture's width (a word is never split: one longer than
    a line runs past the edge)."""
    if not text:
        return []
    room = WIDTH - 2 * MARGIN
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= room:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines
