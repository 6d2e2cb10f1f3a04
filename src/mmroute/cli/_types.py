"""Argument types shared by the command groups.

MLproject parameters arrive as strings: numbers typed ``float`` (``"42.0"``) and empty strings for
"not set", so every command parses them the same way.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

_UNSET = ("", "none")


def optional_int(text: str) -> int | None:
    """Integers, also written as floats ("42.0"); "" or "none" -> None."""
    if text.strip().lower() in _UNSET:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not value.is_integer():
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}")
    return int(value)


def integer(text: str) -> int:
    value = optional_int(text)
    if value is None:
        raise argparse.ArgumentTypeError("expected an integer, got an empty value")
    return value


def optional_str(text: str) -> str | None:
    """The text, or None for "" / "none"."""
    return None if text.strip().lower() in _UNSET else text


def boolean(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def key_value(text: str) -> tuple[str, Any]:
    """``FIELD=VALUE`` with VALUE decoded as JSON when it is JSON (numbers, lists), else kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {text!r}")
    try:
        parsed: Any = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_image_access(parser: Any) -> None:
    """``--image-root`` and ``--allow-outside-images``: where a table's image paths may lead."""
    parser.add_argument("--image-root", type=optional_str, default=None, metavar="DIR",
                        help="folder every image path must resolve into (default: the table's folder)")
    parser.add_argument("--allow-outside-images", action="store_true",
                        help="accept image paths outside the image root (../, absolute, symlinks out): "
                             "only for tables you trust")
