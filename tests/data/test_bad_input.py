"""Bad tables end in one clear error naming the file, the row and the value (issue 14's rows)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmroute.data import DEFAULT_MAX_IMAGE_PIXELS, TableValidationError, load_table
from mmroute.data.synthetic import damaged_files, ensure_synthetic


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (200, 10, 10)).save(path)
    return path


def _table(path: Path, img_paths, **columns) -> Path:
    n = len(img_paths)
    frame = pd.DataFrame({"question": [f"question {i}" for i in range(n)], "img_path": img_paths,
                          "a_correct": [1.0] * n, "a_cost": [0.5] * n, "b_correct": [0.0] * n,
                          "b_cost": [1.0] * n, **columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def layout(tmp_path):
    """tmp/secret.png outside tmp/data/, where the table and its images live."""
    secret = _png(tmp_path / "secret.png")
    data = tmp_path / "data"
    _png(data / "imgs" / "ok.png")
    return tmp_path, data, secret


@pytest.mark.parametrize("bad", ["../secret.png", "ABS", "imgs/link.png"])
def test_image_path_outside_the_table_folder_is_refused(layout, bad):
    root, data, secret = layout
    if bad == "ABS":
        bad = str(secret)
    if bad == "imgs/link.png":
        os.symlink(secret, data / "imgs" / "link.png")  # inside by name, outside by target
    table = _table(data / "t.csv", ["imgs/ok.png", bad])
    with pytest.raises(TableValidationError) as err:
        load_table(table)
    msg = str(err.value)
    assert str(table) in msg and "row 1" in msg and repr(bad) in msg
    assert "outside the table's folder" in msg and "--allow-outside-images" in msg
    # A trusted table may point anywhere: the explicit option, or an image root that holds it.
    assert load_table(table, allow_outside_images=True).image_paths[1] == str(secret.resolve())
    assert load_table(table, image_root=root).has_images.all()


def test_named_image_root_confines_instead_of_the_table_folder(layout):
    root, data, _ = layout
    table = _table(data / "t.csv", ["imgs/ok.png", ""])
    with pytest.raises(TableValidationError, match=r"(?s)outside the image root .*imgs2"):
        load_table(table, image_root=_png(root / "imgs2" / "x.png").parent)
    with pytest.raises(FileNotFoundError, match="image root .* is not a directory"):
        load_table(table, image_root=root / "nowhere")


def test_per_dataset_and_merged_layouts_are_confined_too(tmp_path):
    _png(tmp_path / "outside.png")
    root = tmp_path / "bench"
    _table(root / "ocr.csv", ["../../outside.png"])  # relative to bench/ocr/ when that exists
    (root / "ocr").mkdir()
    with pytest.raises(TableValidationError, match=r"(?s)ocr.csv.*outside the table's folder"):
        load_table(root)
    merged = root / "merged"
    _png(merged / "MathVista" / "0.png")
    # The merged layout derives image paths from dataset_idx: those are confined as well.
    pd.DataFrame({"dataset_idx": ["MathVista_0", "MathVista_../../../outside"], "question": ["q", "r"],
                  "a_correct": [1, 0], "a_cost": [1, 1]}).to_csv(merged / "MMR_Bench.csv", index=False)
    with pytest.raises(TableValidationError, match=r"(?s)column .dataset_idx.*outside.*row 1"):
        load_table(merged, images="ignore")


def test_empty_csv_names_the_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(TableValidationError) as err:
        load_table(path)
    assert str(path) in str(err.value) and "empty" in str(err.value)


def test_a_datasets_image_folder_is_named_as_such(tmp_path):
    _table(tmp_path / "ocr.csv", ["ocr/0.png"])
    _png(tmp_path / "ocr" / "0.png")
    with pytest.raises(FileNotFoundError) as err:
        load_table(tmp_path / "ocr")
    msg = str(err.value)
    assert "is the image folder of dataset 'ocr'" in msg and f"--data {tmp_path / 'ocr.csv'}" in msg
    other = tmp_path / "pics"
    _png(other / "a.png")
    with pytest.raises(FileNotFoundError, match=r"holds 1 image file\(s\) and no table: expected a table file"):
        load_table(other)


def test_model_without_outcomes_has_no_accuracy(tmp_path):
    path = _table(tmp_path / "t.csv", ["", ""])
    frame = pd.read_csv(path).assign(b_correct=np.nan, b_cost=np.nan)
    frame.to_csv(path, index=False)
    summary = load_table(path).summary()
    assert summary["model_accuracy"] == {"a": 1.0, "b": None}
    assert summary["models_without_outcomes"] == ["b"] and summary["model_mean_cost"]["b"] is None


def test_no_text_and_no_images_is_refused_before_any_encoder(tmp_path):
    path = _table(tmp_path / "t.csv", ["", "", ""])
    frame = pd.read_csv(path).assign(question=["", " ", ""])
    frame.to_csv(path, index=False)
    with pytest.raises(TableValidationError, match="every question is empty and no row has an image"):
        load_table(path)
    # Also when the only images are missing files that the "warn" policy drops.
    frame.assign(img_path=["gone.png", "", ""]).to_csv(path, index=False)
    with pytest.raises(TableValidationError, match="no input to route on"):
        load_table(path, images="warn")


def test_damaged_synthetic_cache_is_rebuilt(tmp_path):
    spec = "synthetic:n=60,seed=3"
    first = load_table(spec, cache_dir=tmp_path)
    target = ensure_synthetic(spec, cache_dir=tmp_path)
    manifest = json.loads((target / "mmroute_dataset.json").read_text())
    assert set(manifest["files"]) >= {"ocr.csv", "vqa.csv", "math.csv"}
    csv = target / "ocr.csv"
    lines = csv.read_text().splitlines(keepends=True)
    csv.write_text("".join(lines[: len(lines) // 2]))  # truncated: still a valid, smaller CSV
    assert damaged_files(target) == ["ocr.csv"]
    again = load_table(spec, cache_dir=tmp_path)
    assert again.n_instances == first.n_instances == 60 and not damaged_files(target)
    assert again.content_hash() == first.content_hash()
    [image] = [p for p in manifest["files"] if p.endswith(".png")][:1]
    (target / image).write_bytes(b"\x89PNG broken")
    assert damaged_files(target) == [image]
    ensure_synthetic(spec, cache_dir=tmp_path)
    assert not damaged_files(target)
    assert not [p for p in target.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_default_pixel_limit_is_below_pillows():
    from PIL import Image

    assert 0 < DEFAULT_MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
