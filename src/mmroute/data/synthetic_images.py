"""Procedural images for the synthetic default: the image-only skills drawn with PIL.

Each image encodes an instance's hidden, image-only latents so that an image encoder can recover
them and a text encoder cannot:

- ``glyph`` -> number of dark glyph-like strokes laid out in text lines (OCR load);
- ``count`` -> number of coloured objects (counting load);
- ``detail`` -> how small objects and glyphs are (fine-detail load);
- ``quality`` -> clutter lines, Gaussian pixel noise and blur (low image quality).

The dataset sets the scene style (paper page, coloured scene, plotted figure), as real benchmarks
differ in look. Drawing is deterministic given the numpy generator passed in.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["draw_instance_image"]

_BACKGROUNDS = {"ocr": ((232, 256), (228, 252), (215, 240)),   # paper
                "vqa": ((120, 230), (140, 235), (110, 220)),   # coloured scene
                "math": ((245, 256), (245, 256), (245, 256))}  # white figure


# Saturated, mid-brightness object colours: never as dark as glyph ink, so the two stay separable.
_PALETTE = ((220, 40, 40), (40, 170, 60), (40, 90, 220), (240, 150, 20), (150, 50, 200), (20, 170, 170))


def _background(rng: np.random.Generator, style: str) -> tuple[int, int, int]:
    ranges = _BACKGROUNDS.get(style, _BACKGROUNDS["vqa"])
    return tuple(int(rng.integers(lo, hi)) for lo, hi in ranges)  # type: ignore[return-value]


def _draw_objects(draw, rng: np.random.Generator, size: int, n: int, detail: float) -> None:
    side = size * (0.30 - 0.20 * detail)
    for _ in range(n):
        s = max(2.0, side * rng.uniform(0.7, 1.3))
        x, y = rng.uniform(0, size - s, 2)
        colour = _PALETTE[int(rng.integers(len(_PALETTE)))]
        kind = int(rng.integers(0, 3))
        box = [float(x), float(y), float(x + s), float(y + s)]
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x + s / 2, y), (x, y + s), (x + s, y + s)], fill=colour)


def _draw_glyphs(draw, rng: np.random.Generator, size: int, n: int, detail: float) -> None:
    cell = max(4.0, size * (0.17 - 0.07 * detail))
    per_line = max(1, int((size * 0.9) // cell))
    top = rng.uniform(0.05, 0.25) * size
    ink = tuple(int(c) for c in rng.integers(0, 40, 3))
    width = max(1, int(round(size / 40)))
    for g in range(n):
        row, col = divmod(g, per_line)
        x0, y0 = size * 0.05 + col * cell, top + row * cell * 1.4
        if y0 + cell > size:
            break
        points = [(x0 + rng.uniform(0.1, 0.9) * cell, y0 + rng.uniform(0.05, 0.95) * cell)
                  for _ in range(int(rng.integers(2, 5)))]
        draw.line(points, fill=ink, width=width)


def _draw_plot(draw, rng: np.random.Generator, size: int) -> None:
    axis = (90, 90, 90)
    m = size * 0.08
    draw.line([(m, m), (m, size - m), (size - m, size - m)], fill=axis, width=1)
    ys = np.cumsum(rng.normal(0, size * 0.08, 6)) + size * 0.5
    xs = np.linspace(m, size - m, 6)
    draw.line([(float(x), float(np.clip(y, m, size - m))) for x, y in zip(xs, ys)], fill=(30, 60, 200), width=1)


def draw_instance_image(path: Path, rng: np.random.Generator, *, style: str, glyph: float, count: float,
                        detail: float, quality: float, size: int = 64) -> None:
    """Draw one instance's image and save it as PNG at ``path``.

    Parameters
    ----------
    style : {"ocr", "vqa", "math"}
        Scene style of the instance's dataset.
    glyph, count, detail, quality : float in [0, 1]
        The instance's image-only latents (``quality`` = degradation: 0 clean, 1 very noisy).
    size : int
        Side of the square image in pixels.
    """
    from PIL import Image, ImageDraw, ImageFilter

    img = Image.new("RGB", (size, size), _background(rng, style))
    draw = ImageDraw.Draw(img)
    if style == "math":
        _draw_plot(draw, rng, size)
    _draw_objects(draw, rng, size, 1 + int(round(8 * count)), detail)
    _draw_glyphs(draw, rng, size, int(round(20 * glyph)), detail)
    for _ in range(int(round(12 * quality))):  # clutter: faint random strokes
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        grey = int(rng.integers(100, 200))
        draw.line([(x0, y0), (x1, y1)], fill=(grey, grey, grey), width=1)
    if quality > 0.4:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(quality) * size / 64))
    pixels = np.asarray(img, dtype=np.float64)
    pixels = pixels + rng.normal(0.0, 70.0 * quality, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, format="PNG", compress_level=1)
