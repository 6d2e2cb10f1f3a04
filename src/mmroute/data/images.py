"""Where a table's images may come from, and how large an image may be.

A table is data from somewhere else: its ``img_path`` column must not be able to make mmroute read
any file the user can read (``../../secret.png``, ``/etc/passwd``, a symlink out of the dataset).
By default every image path must resolve (symlinks followed) inside the *image root*: the folder
that holds the table file, or a folder the user names. ``allow_outside=True`` lifts this for
tables the user trusts.

:data:`DEFAULT_MAX_IMAGE_PIXELS` bounds the pixels of one decoded image (width x height). Pillow's
own guard (about 89 M pixels) only warns below twice that; a 12,000 x 12,000 PNG is 450 KB on
disk and 430 MB decoded as RGB. Decoders (:func:`mmroute.features.encoders.open_rgb`, the served
model) read the header first and refuse larger images before decoding them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mmroute._limits import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageRoot", "check_max_pixels"]

@dataclass(frozen=True)
class ImageRoot:
    """Resolves a table's image paths and keeps them inside ``root``.

    Attributes
    ----------
    root : Path
        The folder image paths must resolve into (already resolved).
    allow_outside : bool
        Accept paths outside ``root`` (a trusted table).
    named : bool
        True when the user named ``root`` (quoted differently in messages).
    """

    root: Path
    allow_outside: bool = False
    named: bool = False

    @classmethod
    def for_table(cls, table_folder: str | os.PathLike[str], image_root: str | os.PathLike[str] | None = None,
                  allow_outside: bool = False) -> ImageRoot:
        """The root for a table in ``table_folder``: ``image_root`` when given, else that folder."""
        if image_root is not None:
            root = Path(image_root).expanduser()
            if not root.is_dir():
                raise FileNotFoundError(f"image root {str(root)!r} is not a directory")
            return cls(root.resolve(), bool(allow_outside), named=True)
        return cls(Path(table_folder).expanduser().resolve(), bool(allow_outside))

    def contains(self, path: str) -> bool:
        """Whether an absolute, resolved ``path`` may be read: inside :attr:`root`, or outside allowed."""
        if self.allow_outside or not path:
            return True
        p = Path(path)
        return p == self.root or self.root in p.parents

    def describe(self) -> str:
        return f"the image root {str(self.root)!r}" if self.named else f"the table's folder {str(self.root)!r}"

    def outside_problem(self, column: str, rows: Sequence[int], values: Sequence[str]) -> str:
        """The one validation message for every row whose image path leaves the root."""
        from mmroute.data.validate import format_rows

        shown = ", ".join(values[:3])
        return (f"column '{column}': image path(s) outside {self.describe()} (e.g. {shown}) at "
                f"{format_rows(rows)}; pass image_root= (--image-root DIR) for images kept elsewhere, "
                f"or allow_outside_images=True (--allow-outside-images) for a table you trust")
