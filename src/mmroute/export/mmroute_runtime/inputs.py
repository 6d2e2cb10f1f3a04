"""Parse and validate one scoring request: raw query rows, or rows of precomputed ``features``.

A request is a DataFrame (or a dict of columns) with either

* raw query columns: ``question`` (string, required), ``image`` (optional: base64 of PNG or JPEG
  bytes, a ``data:image/...;base64,`` prefix allowed), ``context`` (optional string), or
* ``features``: one list of ``input_width`` numbers per row (clients that already hold vectors),

plus an optional ``id``. Anything else, or both kinds in one request, is refused with an error the
scoring server answers as HTTP 400 naming the row and the problem. Requests are bounded: at most
``max_rows`` rows, images of at most ``max_image_pixels`` pixels (checked from the header before any
pixel is decoded, so a small file that unpacks to gigabytes is refused cheaply), feature values
that fit in float32.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["DEFAULT_MAX_ROWS", "DEFAULT_MAX_IMAGE_PIXELS", "RAW_COLUMNS", "KNOWN_COLUMNS", "IMAGE_FORMATS",
           "Request", "bad_input", "parse_request", "decode_image", "features_matrix", "query_texts",
           "check_finite_output"]

# Requests above this many rows are refused: one request's memory stays bounded (a model setting,
# ``max_rows`` in the model config).
DEFAULT_MAX_ROWS = 1024
# Below Pillow's own MAX_IMAGE_PIXELS (89.5 M, where it only warns): a 12k x 12k PNG of a few
# hundred KB is refused before decoding. mmroute.data uses the same default for training tables.
DEFAULT_MAX_IMAGE_PIXELS = 36_000_000
RAW_COLUMNS = ("question", "image", "context")
KNOWN_COLUMNS = ("question", "image", "context", "id", "features")
IMAGE_FORMATS = ("PNG", "JPEG")
FLOAT32_MAX = float(np.finfo(np.float32).max)


def bad_input(message: str):
    """An error the scoring server answers with HTTP 400 and this message."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


@dataclass(frozen=True)
class Request:
    """One validated request of ``n`` rows: raw (``questions`` set) or ``features`` (n, width)."""

    n: int
    ids: list[str] | None = None
    questions: list[str] | None = None
    contexts: list[str | None] | None = None
    images: list[Any] | None = None  # PIL RGB images or None, row-aligned
    features: np.ndarray | None = None

    @property
    def raw(self) -> bool:
        return self.questions is not None

    def texts(self) -> list[str]:
        return query_texts(self.questions or [], self.contexts)


def query_texts(questions: Sequence[str], contexts: Sequence[str | None] | None) -> list[str]:
    """The text an encoder embeds: the question, with the context on a new line when present.

    The same rule as ``OutcomeTable.texts`` at training time.
    """
    if contexts is None:
        return [str(q) for q in questions]
    return [f"{q}\n{c}" if c not in (None, "") and c == c else str(q) for q, c in zip(questions, contexts)]


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return value is pd.NA or value is pd.NaT


def _frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, dict):
        try:
            model_input = pd.DataFrame({k: list(v) if isinstance(v, (list, tuple, np.ndarray, pd.Series))
                                        else [v] for k, v in model_input.items()})
        except ValueError as exc:
            raise bad_input(f"input columns have different lengths: {exc}") from None
    if isinstance(model_input, list) and all(isinstance(r, dict) for r in model_input):
        model_input = pd.DataFrame(model_input)
    if not isinstance(model_input, pd.DataFrame):
        raise bad_input(f"expected a table of rows with a 'question' (or 'features') column, got "
                        f"{type(model_input).__name__}")
    return model_input


def decode_image(value: Any, row: int, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
    """A base64 PNG/JPEG string -> RGB PIL image; the pixel limit is checked before decoding."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str):
        raise bad_input(f"row {row}: 'image' must be a base64 string of PNG or JPEG bytes, got "
                        f"{type(value).__name__}")
    text = value.strip()
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or ";base64" not in head:
            raise bad_input(f"row {row}: 'image' is a data URL without ';base64,' data")
    try:
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):  # line-wrapped base64 (MIME style): drop the whitespace
            data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_input(f"row {row}: 'image' is not valid base64 ({exc})") from None
    if not data:
        raise bad_input(f"row {row}: 'image' decodes to no bytes")
    try:
        im = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise bad_input(f"row {row}: 'image' bytes are not a PNG or JPEG image ({exc})") from None
    except Image.DecompressionBombError:
        raise bad_input(f"row {row}: 'image' is larger than Pillow's decompression limit") from None
    with im:
        width, height = im.size
        if width < 1 or height < 1:
            raise bad_input(f"row {row}: 'image' has size {width}x{height}")
        if width * height > max_pixels:
            raise bad_input(f"row {row}: 'image' is {width}x{height} = {width * height} pixels, above the "
                            f"limit of {max_pixels} (the model's max_image_pixels setting)")
        try:
            im.load()
            return im.convert("RGB")
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise bad_input(f"row {row}: 'image' is a damaged {im.format} image ({exc})") from None


def features_matrix(values: Sequence[Any], width: int) -> np.ndarray:
    """Validate a ``features`` column and stack it into float32 (n, width); raises 400-errors."""
    values = list(values)
    if values and all(type(v) is np.ndarray and v.shape == (width,) and v.dtype.kind in "fiu" for v in values):
        # Arrow and Parquet readers hand over one numeric array per row: stack them in one pass.
        return _checked(np.stack(values).astype(np.float64, copy=False))
    rows = []
    for i, value in enumerate(values):
        if value is None or np.isscalar(value):
            raise bad_input(f"row {i}: 'features' must be a list of {width} numbers, got {value!r}")
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise bad_input(f"row {i}: 'features' holds non-numeric values") from None
        if arr.ndim != 1 or arr.shape[0] != width:
            raise bad_input(f"row {i}: 'features' has {arr.size} values, the router expects {width}")
        rows.append(arr)
    if not rows:
        raise bad_input("input has no rows")
    return _checked(np.stack(rows))


def _checked(x: np.ndarray) -> np.ndarray:
    """float64 (n, width) -> float32, refusing rows with NaN/inf or values beyond float32."""
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise bad_input(f"rows {bad[:10].tolist()} of 'features' contain NaN or infinite values")
    big = np.flatnonzero((np.abs(x) > FLOAT32_MAX).any(axis=1))
    if big.size:
        raise bad_input(f"rows {big[:10].tolist()} of 'features' hold values beyond float32's range "
                        f"(|x| > {FLOAT32_MAX:.4g})")
    return x.astype(np.float32)


def _strings(values: list[Any], column: str, *, required: bool) -> list[str | None]:
    out: list[str | None] = []
    for i, value in enumerate(values):
        if _missing(value):
            if required:
                raise bad_input(f"row {i}: '{column}' is missing; every row needs a {column} string")
            out.append(None)
        elif not isinstance(value, str):
            raise bad_input(f"row {i}: '{column}' must be a string, got {type(value).__name__} {value!r:.60}")
        else:
            out.append(value)
    return out


def parse_request(model_input: Any, *, width: int, max_rows: int = DEFAULT_MAX_ROWS,
                  max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, accepts_raw: bool = True,
                  raw_refusal: str = "") -> Request:
    """Validate ``model_input`` into a :class:`Request`; every problem is a 400 naming the row.

    ``accepts_raw`` False (a router over precomputed vectors) refuses raw columns with
    ``raw_refusal`` as the reason.
    """
    frame = _frame(model_input)
    unknown = [str(c) for c in frame.columns if c not in KNOWN_COLUMNS]
    if unknown:
        raise bad_input(f"unknown input columns {unknown}; expected 'question' (with optional 'image', "
                        f"'context', 'id') or 'features' (with optional 'id')")
    n = len(frame)
    if n == 0:
        raise bad_input("input has no rows")
    if n > max_rows:
        raise bad_input(f"request has {n} rows, above the limit of {max_rows} rows per request (the model's "
                        "max_rows setting); split it into smaller requests")

    # Each column read into Python objects once: a pandas column access and tolist() cost more
    # than the checks themselves at one row per request.
    columns = {c: frame[c].tolist() for c in KNOWN_COLUMNS if c in frame.columns}

    def present(col: str) -> bool:
        return col in columns and not all(_missing(v) for v in columns[col])

    ids = None
    if "id" in columns:
        ids = ["" if _missing(v) else str(v) for v in columns["id"]]
    raw_given = [c for c in RAW_COLUMNS if present(c)]
    if present("features"):
        if raw_given:
            raise bad_input(f"the request has both 'features' and raw query columns {raw_given}; send one "
                            "or the other")
        return Request(n=n, ids=ids, features=features_matrix(columns["features"], width))
    if not accepts_raw:
        raise bad_input(f"this router takes precomputed vectors only: send a 'features' column (a list of "
                        f"{width} numbers per row){': ' + raw_refusal if raw_refusal else ''}")
    if "question" not in columns:
        raise bad_input(f"input is missing the column 'question' (a string per row); got columns "
                        f"{[str(c) for c in frame.columns]}")
    questions = _strings(columns["question"], "question", required=True)
    contexts = _strings(columns["context"], "context", required=False) if "context" in columns else None
    images = None
    if "image" in columns:
        images = [None if _missing(v) or (isinstance(v, str) and not v.strip())
                  else decode_image(v, i, max_image_pixels) for i, v in enumerate(columns["image"])]
    return Request(n=n, ids=ids, questions=questions, contexts=contexts, images=images)


def check_finite_output(**arrays: np.ndarray) -> None:
    """Refuse to answer with NaN/inf: raise naming the first bad output and rows."""
    for name, arr in arrays.items():
        arr = np.asarray(arr, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr.reshape(len(arr), -1)).all(axis=1))
        if bad.size:
            raise bad_input(f"rows {bad[:10].tolist()}: the router's {name} is not finite for these inputs "
                            "(values out of the range the model was trained on); no answer given")
