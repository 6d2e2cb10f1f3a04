"""``mmroute embed`` end to end on a tiny CSV table with PNG images."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest

from feature_helpers import draw_image
from mmroute.cli import embed


def _write_table(tmp_path, n=12):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(n):
        img = f"img/{i}.png" if i % 3 else ""
        if img:
            draw_image(tmp_path / img, seed=i)
        rows.append({"id": f"q{i}", "question": f"what is shown in picture number {i} of topic {i % 4}",
                     "img_path": img, "a_correct": i % 2, "a_cost": 0.1, "b_correct": 1, "b_cost": 1.0})
    path = tmp_path / "table.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(argv):
    parser = argparse.ArgumentParser(prog="mmroute")
    embed.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["embed", *argv])
    return args.func(args)


def test_embed_writes_features_ids_and_metadata(tmp_path):
    table = _write_table(tmp_path)
    out = tmp_path / "out" / "emb.npz"
    rc = _run(["--data", str(table), "--features", "offline", "--fusion", "adaptive", "-o", "dim=4",
               "-o", "progress=False", "--cache-dir", str(tmp_path / "cache"), "--train-frac", "0.5",
               "--split-seed", "3", "--out", str(out)])
    assert rc == 0
    data = np.load(out)
    assert data["fused"].shape[0] == 12 and data["text"].shape == (12, 4)
    assert data["image"].shape[0] == 12 and data["image_mask"].sum() == 8
    assert list(data["ids"]) == [f"q{i}" for i in range(12)]
    np.testing.assert_array_equal(data["row"], np.arange(12))
    assert len(data["train_idx"]) == 6
    meta = json.loads(str(data["meta"]))
    assert meta["features.encoder.progress"] is False
    assert meta["fusion"] == "adaptive" and "tfidf(dim=4" in meta["features.identity"]
    assert list((tmp_path / "cache" / "embeddings").glob("*.npy"))


def test_embed_rejects_bad_options(tmp_path):
    with pytest.raises(SystemExit):
        _run(["--data", "x", "--out", "y", "-o", "novalue"])
    with pytest.raises(SystemExit):
        _run(["--data", "x", "--out", "y", "--fusion", "max"])


def test_old_spellings_still_parse_with_a_deprecation_warning():
    parser = argparse.ArgumentParser(prog="mmroute")
    embed.register(parser.add_subparsers(dest="command"))
    with pytest.warns(DeprecationWarning, match="--table is deprecated.*use --data"):
        args = parser.parse_args(["embed", "--table", "t.csv", "--encoder", "emb.npy", "--seed", "7", "--out", "o"])
    assert (args.data, args.features, args.split_seed) == ("t.csv", "precomputed:emb.npy", 7)
