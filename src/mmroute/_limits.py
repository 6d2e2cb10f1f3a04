"""Input limits shared by the data loaders and the encoders, importable without pandas (encoders
run inside Spark workers too). The public names live in :mod:`mmroute.data.images`."""

from __future__ import annotations

# 6,000 x 6,000: above any benchmark image (MMR-Bench's largest are ~4,000 px a side), well below
# Pillow's default, and ~100 MB as RGB.
DEFAULT_MAX_IMAGE_PIXELS = 36_000_000


def check_max_pixels(value: object, what: str = "max_image_pixels") -> int:
    """``value`` as a positive int, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or int(value) != value or int(value) < 1:
        raise ValueError(f"{what}={value!r}: expected a positive integer number of pixels "
                         f"(default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    return int(value)
