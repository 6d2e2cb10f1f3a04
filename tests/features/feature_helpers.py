"""Tiny outcome tables with PNG images drawn in tmp_path, shared by the feature tests.

A uniquely named module (not ``conftest``) so that importing it never collides with the
helpers of other test folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mmroute.data.table import OutcomeTable

TOPICS = [
    "solve the integral of x squared over the unit interval",
    "read the text printed on the street sign in the photo",
    "how many apples are on the kitchen table",
    "compute the area of the triangle with sides three four five",
    "what colour is the car parked next to the building",
    "transcribe the handwritten receipt total amount",
]


def draw_image(path: Path, seed: int, size: tuple[int, int] = (48, 40)) -> Path:
    """A small deterministic PNG: a coloured background with a few shapes."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", size, tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x0, y0 = (int(v) for v in rng.integers(0, 20, 2))
        draw.rectangle([x0, y0, x0 + 15, y0 + 12], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    img.save(path)
    return path


def make_table(tmp_path: Path, n: int = 12, *, with_images: bool = True, missing_every: int = 4,
               seed: int = 0) -> OutcomeTable:
    """``n`` instances, 3 models; every ``missing_every``-th row has no image."""
    rng = np.random.default_rng(seed)
    img_dir = tmp_path / "images"
    img_dir.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        if with_images and i % missing_every != missing_every - 1:
            paths.append(str(draw_image(img_dir / f"{i}.png", seed=1000 * seed + i)))
        else:
            paths.append(None)
    questions = [f"{TOPICS[i % len(TOPICS)]} case {i}" for i in range(n)]
    return OutcomeTable(
        ids=[f"q{i}" for i in range(n)], datasets=["toy"] * n, questions=questions,
        models=("a", "b", "c"),
        correct=rng.integers(0, 2, (n, 3)).astype(float), cost=rng.uniform(0.1, 1.0, (n, 3)),
        image_paths=paths if with_images else None,
        contexts=[f"option {i % 3}" for i in range(n)], source="tiny-test",
        extra={"row": np.arange(n)},
    )
