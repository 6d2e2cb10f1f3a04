"""Hypothesis strategies for bad input: malformed tables, CLI argument values, scoring payloads.

Each strategy mixes valid values with the kinds of wrongness users produce: wrong types, NaN and
infinities, values beyond float32, duplicates, empty strings, unicode, wrong shapes.

Settings: bounded and reproducible in CI, deeper on demand. ``HYPOTHESIS_PROFILE=deep`` (or
``MMROUTE_FUZZ_SCALE=N``) multiplies every test's example count and draws new random examples each
run; the default replays the same derandomized examples, so CI never flakes and the suite stays
within a few minutes on 2 cores.
"""

from __future__ import annotations

import base64
import io
import math
import os

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

_SCALE = float(os.environ.get("MMROUTE_FUZZ_SCALE", "10" if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else "1"))


def fuzz_settings(max_examples: int, **kwargs):
    """``settings`` for one fuzz test: ``max_examples`` scaled, no per-example deadline (the
    machine is shared; hangs are caught by explicit timeouts instead), derandomized at scale 1."""
    return settings(max_examples=max(1, int(max_examples * _SCALE)), deadline=None, derandomize=_SCALE == 1,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large], **kwargs)

# ------------------------------------------------------------------ scalars
WEIRD_FLOATS = st.sampled_from([math.nan, math.inf, -math.inf, 3.5e38, -3.5e38, 1e308, -0.0, 5e-324, 2.0, -1.0])
TEXT = st.one_of(st.text(max_size=12), st.sampled_from(["", " ", "\u00e9\u00e8", "\u2603", "\U0001f600", "a\x00b",
                                                         "nan", "inf", "None", "1e999", "0x10", "\n", "\"", ","]))
SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                   st.floats(allow_nan=True, allow_infinity=True), WEIRD_FLOATS, TEXT)
OUTCOME = st.one_of(st.sampled_from([0, 1, 0.0, 1.0, 0.5]), SCALAR)
COST = st.one_of(st.floats(0, 10), SCALAR)

# ------------------------------------------------------------------ tables
MODEL_NAMES = st.sampled_from(["m1", "m2", "gpt", "\u00e9t\u00e9", "a b", "", "x_correct", "1"])
EXTRA_COLUMNS = st.sampled_from(["id", "dataset", "img_path", "answer", "options", "split", "row", "question",
                                 "prompt", "m9_correct", "m9_cost", "m9|total_cost", "m9", "Unnamed: 0", ""])


@st.composite
def table_frames(draw) -> pd.DataFrame:
    """A DataFrame shaped like an outcome table, more or less: 0-6 rows, 0-3 models, extra columns."""
    n = draw(st.integers(0, 6))
    columns: dict[str, list] = {}
    if draw(st.booleans()) or n == 0:
        columns["question"] = draw(st.lists(st.one_of(TEXT, SCALAR), min_size=n, max_size=n))
    for model in draw(st.lists(MODEL_NAMES, max_size=3)):
        if draw(st.integers(0, 5)):  # sometimes the _cost (or the _correct) is missing
            columns[f"{model}_correct"] = draw(st.lists(OUTCOME, min_size=n, max_size=n))
        if draw(st.integers(0, 5)):
            columns[f"{model}_cost"] = draw(st.lists(COST, min_size=n, max_size=n))
    for name in draw(st.lists(EXTRA_COLUMNS, max_size=3)):
        if name == "id":
            pool = st.sampled_from(["a", "a", "b", "", "007", "\u2603"])  # duplicates on purpose
            columns[name] = draw(st.lists(st.one_of(pool, SCALAR), min_size=n, max_size=n))
        elif name == "img_path":
            paths = st.sampled_from(["", "img.png", "../secret.png", "/etc/passwd", "sub/../../x.png", "nul\x00.png",
                                     "missing.jpg", "."])
            columns[name] = draw(st.lists(paths, min_size=n, max_size=n))
        else:
            columns[name] = draw(st.lists(SCALAR, min_size=n, max_size=n))
    return pd.DataFrame(columns)


TABLE_SUFFIXES = st.sampled_from([".csv", ".tsv", ".parquet", ".json", ".jsonl"])
RAW_BYTES = st.one_of(st.binary(max_size=200), st.sampled_from([
    b"", b"\n", b"question\n", b",,,\n,,,\n", b"question,a_correct,a_cost\n", b"\xff\xfe\x00garbage",
    b"question,a_correct,a_cost\n\"unterminated,1,1\n", b"{", b"[]", b"{\"question\": 1}"]))

# ------------------------------------------------------------------ CLI
NUMBERS = st.sampled_from(["0", "1", "1.0", "2", "0.5", "-1", "-0.5", "nan", "inf", "-inf", "1e309", "abc", "",
                           "\u00bd", "0x1", "3.7", "1e-300", "99999999999999999999"])
SPECS = st.sampled_from(["synthetic:n=abc", "synthetic:n=-5", "synthetic:n=2.5", "synthetic:seed=-1",
                         "synthetic:image_size=100000", "synthetic:image_size=8", "synthetic:bogus=1",
                         "synthetic:n", "synthetic:n=2,,", "NOPE/does-not-exist.csv", "", " ", "/", ".", "+",
                         "a+b", "/etc/passwd", "\u2603.csv", "x.xlsx"])
ROUTER_SETS = st.sampled_from(["nosuch.k=3", "knn.k=abc", "knn.k=1.5", "knn.k=nan", "knn.depth=1", "k=3",
                               "*.max_epochs=-1", "knn.=3", ".k=3", "knn.k", "knn.k=", "=", "*.nope=1",
                               "knn.k=3 kmeans.n_clusters=x"])


@st.composite
def cli_argvs(draw) -> list[str]:
    """An argv for ``mmroute.cli.main`` whose command cannot run long: data is a bad spec or a
    nonexistent file, so a valid-looking command ends at validation or at loading."""
    kind = draw(st.sampled_from(["validate", "train", "sweep", "prepare", "registry", "embed"]))
    if kind == "validate":
        argv = ["data", "validate", draw(SPECS)]
        if draw(st.booleans()):
            argv += ["--images", draw(st.sampled_from(["error", "warn", "ignore", "zero", ""]))]
        return argv + (["--json"] if draw(st.booleans()) else [])
    if kind == "registry":
        cmd = draw(st.sampled_from(["status", "rollback", "promote"]))
        argv = [cmd, "--model", draw(st.one_of(TEXT, st.just("mmroute-router")))]
        if cmd == "promote":
            argv += ["--to", draw(st.sampled_from(["staging", "production", "qa", ""])),
                     "--version", draw(NUMBERS), "--min-delta", draw(NUMBERS)]
        return argv
    if kind == "embed":
        return ["embed", "--data", draw(SPECS), "--out", "out.npz", "--fusion", draw(st.sampled_from(
            ["mean", "max", ""])), "--train-frac", draw(NUMBERS)]
    argv = [kind, "--data", draw(SPECS)]
    if kind == "train":
        argv += ["--router", draw(st.sampled_from(["knn", "nosuch", "", "oracle"]))]
    if kind == "sweep":
        argv += ["--routers", draw(st.sampled_from(["knn", "knn,nosuch", "", "all", ",,"]))]
    if kind != "prepare":
        flags = draw(st.lists(st.sampled_from(["--train-frac", "--split-seed", "--mode", "--max-epochs",
                                               "--set", "--split", "--rules", "--fusion"]), max_size=3, unique=True))
        for flag in flags:
            value = draw(ROUTER_SETS) if flag == "--set" else draw(
                st.one_of(NUMBERS, st.sampled_from(["in", "out", "column", "budget", "vote", "mean", "22", "44"])))
            argv += [flag, value]
    return argv


# ------------------------------------------------------------------ scoring payloads
FEATURE_VALUE = st.one_of(st.floats(-5, 5), st.floats(allow_nan=True, allow_infinity=True), WEIRD_FLOATS,
                          st.none(), st.booleans(), st.sampled_from(["1.0", "x", ""]), st.integers(-(2 ** 70), 2 ** 70))


def _png_base64(width: int, height: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (9, 99, 199)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _bomb_base64() -> str:
    """A PNG header announcing 12,000 x 12,000 pixels with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12_000, 12_000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


IMAGES = st.one_of(st.none(), st.sampled_from(["", "not base64!", "aGVsbG8=", "data:image/png;base64,", "data:,x"]),
                   st.builds(_png_base64, st.integers(1, 8), st.integers(1, 8)), st.just("BOMB"), st.integers(),
                   st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()))


@st.composite
def feature_rows(draw, width: int) -> list:
    """One ``features`` cell: usually a list of about ``width`` values, sometimes not a list at all."""
    shape = draw(st.sampled_from(["ok", "ok", "ok", "short", "long", "scalar", "nested", "empty", "string"]))
    if shape == "scalar":
        return draw(FEATURE_VALUE)
    if shape == "string":
        return draw(st.sampled_from(["[1,2,3]", "", "x"]))
    if shape == "nested":
        return [[0.0] * width]
    if shape == "empty":
        return []
    n = {"ok": width, "short": max(width - 1, 0), "long": width + 1}[shape]
    if draw(st.integers(0, 3)) == 0:
        return draw(st.lists(FEATURE_VALUE, min_size=n, max_size=n))
    return draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n))


PARAM_VALUES = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True), WEIRD_FLOATS,
                         st.sampled_from([0.0, 0.5, 1.0, 5.0, 1e9, -1.0, "1.0", "abc", "", True]))


@st.composite
def scoring_payloads(draw, width: int, models: tuple[str, ...]) -> tuple[pd.DataFrame | dict, dict]:
    """(model_input, params) for the pyfunc's ``predict``: feature rows or raw query rows, ids,
    unknown columns, and every inference param with odd values."""
    n = draw(st.sampled_from([0, 1, 1, 2, 3, 5]))
    kind = draw(st.sampled_from(["features"] * 4 + ["raw", "mixed", "dict", "unknown"]))
    cols: dict[str, list] = {}
    if kind in ("features", "mixed", "dict"):
        cols["features"] = [draw(feature_rows(width)) for _ in range(n)]
    if kind in ("raw", "mixed"):
        cols["question"] = draw(st.lists(st.one_of(TEXT, TEXT, TEXT, SCALAR), min_size=n, max_size=n))
        if draw(st.booleans()):
            cols["image"] = [_bomb_base64() if v == "BOMB" else v
                             for v in draw(st.lists(IMAGES, min_size=n, max_size=n))]
        if draw(st.booleans()):
            cols["context"] = draw(st.lists(st.one_of(TEXT, st.none()), min_size=n, max_size=n))
    if kind == "unknown":
        cols[draw(st.sampled_from(["inputs", "instances", "x", ""]))] = [[0.0] * width] * n
    if draw(st.booleans()):
        cols["id"] = draw(st.lists(st.one_of(TEXT, SCALAR), min_size=n, max_size=n))
    params: dict = {}
    for key in draw(st.lists(st.sampled_from(["budget", "tradeoff", "target_cost", "target_quality", "models",
                                              "fallback", "nosuch"]), max_size=2, unique=True)):
        if key == "models":
            params[key] = draw(st.one_of(st.sampled_from([",".join(models), models[0], "", ",", "nosuch",
                                                          f"{models[0]},nosuch"]), PARAM_VALUES))
        elif key == "fallback":
            params[key] = draw(st.sampled_from(["cheapest", "first", "best", "", None]))
        else:
            params[key] = draw(PARAM_VALUES)
    if kind == "dict":
        return cols, params
    try:
        frame = pd.DataFrame(cols)
    except ValueError:  # ragged lists: hand over the dict as a client library might
        return cols, params
    return frame, params


def is_finite_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and math.isfinite(float(value))
