"""Loaders: MMR-Bench per-dataset and merged layouts, generic tables, RouterBench, synthetic specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmroute.data import OutcomeTable, TableValidationError, load_table


def _png(path: Path, colour=(200, 10, 10)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), colour).save(path)


def _outcomes(n: int, models=("m1", "m2"), seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {}
    for j, m in enumerate(models):
        cols[f"{m}_correct"] = rng.integers(0, 2, n).astype(float)
        cols[f"{m}_cost"] = np.round(rng.uniform(0.1, 1.0, n) * (j + 1), 4)
    return cols


@pytest.fixture
def per_dataset_root(tmp_path: Path) -> Path:
    """<root>/ocrbench.csv with images in <root>/ocrbench/, <root>/mathvista.csv with an absolute path."""
    _png(tmp_path / "ocrbench" / "a.png")
    _png(tmp_path / "ocrbench" / "sub" / "b.jpg")
    pd.DataFrame({"question": ["q0", "q1", "q2"], "answer": ["x", "y", "z"],
                  "img_path": ["a.png", "sub/b.jpg", ""], **_outcomes(3)}).to_csv(tmp_path / "ocrbench.csv",
                                                                                  index=False)
    abs_img = tmp_path / "elsewhere" / "c.png"
    _png(abs_img)
    pd.DataFrame({"question": ["p0", "p1"], "img_path": [str(abs_img), str(abs_img)],
                  **_outcomes(2, seed=1)}).to_csv(tmp_path / "mathvista.csv", index=False)
    return tmp_path


def test_per_dataset_csv_resolves_images_and_infers_models(per_dataset_root: Path) -> None:
    table = load_table(per_dataset_root / "ocrbench.csv")
    assert isinstance(table, OutcomeTable)
    assert table.models == ("m1", "m2")
    assert list(table.datasets) == ["ocrbench"] * 3
    assert table.image_paths[0] == str((per_dataset_root / "ocrbench" / "a.png").resolve())
    assert table.image_paths[1] == str((per_dataset_root / "ocrbench" / "sub" / "b.jpg").resolve())
    assert table.image_paths[2] == ""
    assert list(table.has_images) == [True, True, False]
    assert list(table.extra["answer"]) == ["x", "y", "z"]
    assert list(table.extra["row"]) == [0, 1, 2]
    assert "m1_correct" not in table.extra and "question" not in table.extra


def test_plus_joined_spec_concatenates_datasets_in_order(per_dataset_root: Path) -> None:
    table = load_table(per_dataset_root / "ocrbench+mathvista")
    assert table.n_instances == 5
    assert table.dataset_names == ["ocrbench", "mathvista"]
    assert list(table.extra["row"]) == [0, 1, 2, 3, 4]
    assert len(set(table.ids)) == 5  # ids are prefixed by dataset, so per-file row ids do not collide
    expected = pd.read_csv(per_dataset_root / "mathvista.csv")["m2_cost"].to_numpy()
    np.testing.assert_allclose(table.cost[3:, 1], expected)
    # case-insensitive names, name without extension, and the dataset= filter
    assert load_table(per_dataset_root / "OCRBench").n_instances == 3
    assert load_table(per_dataset_root, dataset="mathvista").dataset_names == ["mathvista"]


def test_concatenation_fills_models_missing_from_one_dataset_with_nan(tmp_path: Path) -> None:
    pd.DataFrame({"question": ["a"], "category": ["c"], **_outcomes(1, models=("m1",))}).to_csv(
        tmp_path / "d1.csv", index=False)
    pd.DataFrame({"question": ["b"], **_outcomes(1, models=("m1", "m2"))}).to_csv(tmp_path / "d2.csv", index=False)
    table = load_table(tmp_path / "d1+d2")
    assert table.dataset_names == ["d1", "d2"]  # the file names the dataset, not a category column
    assert list(table.extra["category"]) == ["c", None]
    assert table.models == ("m1", "m2")
    assert np.isnan(table.correct[0, 1]) and np.isnan(table.cost[0, 1])
    assert table.missing.sum() == 1


def _merged_root(tmp_path: Path) -> Path:
    _png(tmp_path / "SEEDBenchv2Plus" / "0.jpg")
    _png(tmp_path / "MathVista" / "12.png")
    _png(tmp_path / "OCRBench" / "7.webp")
    frame = pd.DataFrame({"dataset_idx": ["SEEDBench2_Plus_0", "MathVista_12", "OCRBench_7", "MathVista_12b"],
                          "question": ["s", "m", "o", "m2"], **_outcomes(4)})
    _png(tmp_path / "MathVista" / "12b.jpeg")
    frame.to_csv(tmp_path / "MMR_Bench.csv", index=False)
    return tmp_path


def test_merged_maps_dataset_idx_to_image_folders(tmp_path: Path) -> None:
    root = _merged_root(tmp_path)
    table = load_table(root / "MMR_Bench.csv")
    assert list(table.datasets) == ["SEEDBench2_Plus", "MathVista", "OCRBench", "MathVista"]
    assert table.image_paths.tolist() == [str((root / p).resolve()) for p in
                                          ("SEEDBenchv2Plus/0.jpg", "MathVista/12.png", "OCRBench/7.webp",
                                           "MathVista/12b.jpeg")]
    assert list(table.ids) == ["SEEDBench2_Plus_0", "MathVista_12", "OCRBench_7", "MathVista_12b"]
    # the directory form picks the merged file too
    assert load_table(root).n_instances == 4


def test_merged_plus_filter_keeps_file_row_positions(tmp_path: Path) -> None:
    root = _merged_root(tmp_path)
    table = load_table(root / "mathvista+seedbench2_plus")
    assert sorted(table.dataset_names) == ["MathVista", "SEEDBench2_Plus"]
    assert list(table.extra["row"]) == [0, 1, 3]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_table(root / "MMR_Bench.csv", dataset="mmstar")


def test_merged_reports_missing_images_by_row(tmp_path: Path) -> None:
    root = _merged_root(tmp_path)
    (root / "OCRBench" / "7.webp").unlink()
    with pytest.raises(TableValidationError, match=r"img_path.*row 2\b"):
        load_table(root)
    table = load_table(root, images="warn")
    assert table.image_paths[2] == "" and table.has_images.sum() == 3
    assert load_table(root, images="ignore").image_paths[2].endswith("OCRBench/7.jpg")


def test_generic_parquet_keeps_extra_columns_out_of_models(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["7", "8", "9"], "question": ["a", "b", "c"], "options": ["[1]", "[2]", "[3]"],
                          "answer": ["A", "B", "C"], "category": ["law", "math", "law"], "src": ["s", "s", "t"],
                          **_outcomes(3), "m1_out_tokens": [1.0, 2.0, 3.0], "m2_out_tokens": [4.0, 5.0, 6.0]})
    path = tmp_path / "table.parquet"
    frame.to_parquet(path)
    table = load_table(path)
    assert table.models == ("m1", "m2")
    assert list(table.ids) == ["7", "8", "9"]
    assert list(table.datasets) == ["law", "math", "law"]
    assert list(table.contexts) == ["[1]", "[2]", "[3]"]
    assert table.texts()[0] == "a\n[1]"
    assert table.image_paths is None
    np.testing.assert_array_equal(table.extra["m2_out_tokens"], [4.0, 5.0, 6.0])
    assert set(table.extra) >= {"answer", "src", "category", "row"}
    assert load_table(path, dataset="math").n_instances == 1


def test_csv_ids_keep_leading_zeros(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["007", "010"], "question": ["a", "b"], **_outcomes(2)}).to_csv(tmp_path / "t.csv", index=False)
    assert list(load_table(tmp_path / "t.csv").ids) == ["007", "010"]


def _routerbench_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "sample_id": ["mmlu.1", "gsm8k.2", "mmlu.3"], "prompt": ["p1", "p2", "p3"],
        "eval_name": ["mmlu", "gsm8k", "mmlu"], "oracle_model_to_route_to": ["gpt-4", "llama", "gpt-4"],
        "gpt-4": [1.0, 0.0, 1.0], "gpt-4|model_response": ["r", "r", "r"], "gpt-4|total_cost": [3e-3, 2e-3, 1e-3],
        "llama": [0.0, 1.0, 0.5], "llama|model_response": ["r", "r", "r"], "llama|total_cost": [1e-4, 2e-4, 3e-4],
    })


@pytest.mark.parametrize("suffix", [".pkl", ".csv"])
def test_routerbench_wide_format(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"routerbench_0shot{suffix}"
    frame = _routerbench_frame()
    frame.to_pickle(path) if suffix == ".pkl" else frame.to_csv(path, index=False)
    table = load_table(path)
    assert table.models == ("gpt-4", "llama")
    assert list(table.ids) == ["mmlu.1", "gsm8k.2", "mmlu.3"]
    assert list(table.questions) == ["p1", "p2", "p3"]
    assert table.dataset_names == ["mmlu", "gsm8k"]
    np.testing.assert_allclose(table.cost[:, 0], [3e-3, 2e-3, 1e-3])
    np.testing.assert_allclose(table.correct[:, 1], [0.0, 1.0, 0.5])
    assert "oracle_model_to_route_to" in table.extra
    assert not any(k.endswith("|model_response") for k in table.extra)


def test_routerbench_cost_without_score_column_is_reported(tmp_path: Path) -> None:
    frame = _routerbench_frame().drop(columns=["llama"])
    path = tmp_path / "rb.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(TableValidationError, match=r"'llama\|total_cost'.*no score column 'llama'"):
        load_table(path)


def test_synthetic_spec_generates_once_into_the_cache(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MMROUTE_CACHE_DIR", str(tmp_path / "cache"))
    table = load_table("synthetic:n=30,seed=5,image_size=16")
    assert table.n_instances == 30
    assert table.dataset_names == ["ocr", "vqa", "math"]
    assert table.has_images.any() and all(Path(p).is_file() for p in table.image_paths if p)
    folder = tmp_path / "cache" / "synthetic" / "v1-n30-seed5-img16"
    assert folder.is_dir()
    stamp = (folder / "ocr.csv").stat().st_mtime_ns
    again = load_table("synthetic:n=30,seed=5,image_size=16")
    assert (folder / "ocr.csv").stat().st_mtime_ns == stamp  # reused, not regenerated
    assert again.content_hash() == table.content_hash()
    other = load_table("synthetic:n=30,seed=5,image_size=16", cache_dir=tmp_path / "elsewhere")
    assert other.n_instances == 30 and (tmp_path / "elsewhere" / "synthetic").is_dir()


def test_unknown_paths_and_bad_options_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such"):
        load_table(tmp_path / "nope" / "a+b")
    with pytest.raises(FileNotFoundError, match="no such dataset CSV"):
        load_table(tmp_path / "a+b")
    with pytest.raises(ValueError, match="images must be one of"):
        load_table(tmp_path, images="maybe")
    with pytest.raises(ValueError, match="bad synthetic spec item"):
        load_table("synthetic:rows=3")
    (tmp_path / "t.xlsx").write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_table(tmp_path / "t.xlsx")


REAL_TABLE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mmlu_pro_routing.parquet"


@pytest.mark.shared_data
@pytest.mark.skipif(not REAL_TABLE.is_file(), reason="../shared/data/mmlu_pro_routing.parquet not available")
def test_real_mmlu_pro_parquet_loads_as_is() -> None:
    table = load_table(REAL_TABLE)
    assert (table.n_instances, table.n_models) == (12032, 29)
    assert len(table.dataset_names) == 14 and "math" in table.dataset_names
    assert not any(m.endswith("_out_tokens") for m in table.models)
    assert "gemini-1.5-pro-002_out_tokens" in table.extra and "answer" in table.extra
    assert table.contexts is not None and table.texts()[0].startswith(str(table.questions[0]) + "\n[")
    assert table.missing[:, table.models.index("DeepSeek-Coder-V2")].sum() == 1681
    sub = table.subset([5, 2])
    assert list(sub.extra["row"]) == [5, 2]
