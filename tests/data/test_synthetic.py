"""The synthetic default: determinism, format, and that routing on it matters (and needs the image)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mmroute.data import default_cache_dir, load_table, make_synthetic
from mmroute.data.synthetic import parse_synthetic_spec, sample_latents
from mmroute.data.synthetic_spec import DATASETS, IMAGE_SKILLS, MODELS, outcome_logits


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic(tmp_path_factory.mktemp("synth") / "data", n_instances=600, seed=0, image_size=48)


@pytest.fixture(scope="module")
def latents(synth: Path) -> pd.DataFrame:
    return pd.concat([pd.read_csv(synth / "latent" / f"{d}.csv") for d in DATASETS], ignore_index=True)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    a = make_synthetic(tmp_path / "a", n_instances=40, seed=3, image_size=24)
    b = make_synthetic(tmp_path / "b", n_instances=40, seed=3, image_size=24)
    c = make_synthetic(tmp_path / "c", n_instances=40, seed=4, image_size=24)
    da, db, dc = _digest(a), _digest(b), _digest(c)
    assert any(k.endswith(".png") for k in da)
    assert da == db
    assert da["ocr.csv"] != dc["ocr.csv"]


def test_layout_is_mmrbench_per_dataset_csv(synth: Path) -> None:
    frame = pd.read_csv(synth / "ocr.csv")
    assert list(frame.columns[:4]) == ["id", "question", "answer", "img_path"]
    assert [c for c in frame.columns if c.endswith("_correct")] == [f"{m['name']}_correct" for m in MODELS]
    rel = frame["img_path"].dropna()
    assert len(rel) and not any(Path(p).is_absolute() for p in rel)
    assert all((synth / "ocr" / p).is_file() for p in rel)
    with Image.open(synth / "ocr" / rel.iloc[0]) as img:
        assert img.size == (48, 48) and img.format == "PNG"


def test_loads_as_a_valid_table(synth: Path) -> None:
    table = load_table(synth)
    assert table.n_instances == 600 and table.n_models == len(MODELS) >= 6
    assert table.dataset_names == list(DATASETS)
    text_only = (~table.has_images).mean()
    assert 0.05 < text_only < 0.4  # a share of text-only instances
    assert np.all(table.cost[~np.isnan(table.cost)] > 0)
    missing = table.missing.sum(axis=0)
    assert missing[[m["name"] for m in MODELS].index("api-reasoner")] > 0 and missing.sum() == missing.max()


def test_routing_matters(synth: Path) -> None:
    table = load_table(synth)
    correct, cost = table.filled()
    acc, mean_cost = correct.mean(axis=0), cost.mean(axis=0)
    best = int(acc.argmax())
    oracle = correct.max(axis=1).mean()
    assert oracle - acc[best] > 0.2  # the oracle is far above the best single model
    # no single model dominates: several models sit on the single-model cost/accuracy frontier ...
    order = np.argsort(mean_cost)
    frontier = [j for k, j in enumerate(order) if acc[j] > acc[order[:k]].max(initial=-1)]
    assert len(frontier) >= 3
    # ... and the best model overall is not the best on every dataset
    per_dataset_best = {int(correct[table.datasets == d].mean(axis=0).argmax()) for d in table.dataset_names}
    assert len(per_dataset_best) >= 2 and per_dataset_best != {best}


def test_image_only_skills_make_text_only_routing_worse() -> None:
    """Expected accuracy of always picking the best model, knowing all latents vs. only what text reveals.

    Without the image a router knows the dataset, whether there is an image and the text skills;
    the image latents are then only known in distribution (averaged by resampling them within the
    dataset/has-image group).
    """
    lat = sample_latents(np.random.default_rng(0), 6000)
    prob = 1.0 / (1.0 + np.exp(-outcome_logits(lat)))
    image_cols = list(IMAGE_SKILLS) + ["quality"]
    expected = np.zeros_like(prob)
    rng = np.random.default_rng(1)
    for _, group in lat.groupby(["dataset", "has_image"]):
        sub, values = group.copy(), group[image_cols].to_numpy()
        for _ in range(20):
            sub[image_cols] = values[rng.permutation(len(sub))]
            expected[group.index] += 1.0 / (1.0 + np.exp(-outcome_logits(sub))) / 20
    rows = np.arange(len(lat))
    full, text_only = prob.max(axis=1).mean(), prob[rows, expected.argmax(axis=1)].mean()
    assert full - text_only > 0.03


def _image_stats(path: str) -> np.ndarray:
    with Image.open(path) as img:
        rgb = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    grey = rgb.mean(axis=2)
    high_freq = np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean()
    return np.array([(grey < 0.3).mean(), (rgb.max(axis=2) - rgb.min(axis=2) > 0.5).mean(), high_freq])


def test_images_carry_the_image_only_latents_and_text_does_not(synth: Path, latents: pd.DataFrame) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold, cross_val_score

    table = load_table(synth)
    has = table.has_images
    stats = np.stack([_image_stats(p) for p in table.image_paths[has]])
    lat = latents[has]
    assert np.corrcoef(stats[:, 0], lat["glyph"])[0, 1] > 0.7  # dark ink <- glyph strokes
    assert np.corrcoef(stats[:, 1], lat["count"])[0, 1] > 0.5  # saturated area <- objects
    assert np.corrcoef(stats[:, 2], lat["quality"])[0, 1] > 0.6  # high frequencies <- noise

    words = TfidfVectorizer().fit_transform(table.questions)
    folds = KFold(3, shuffle=True, random_state=0)  # rows are grouped by dataset: shuffle the folds
    r2 = {s: cross_val_score(Ridge(alpha=1.0), words, latents[s], cv=folds, scoring="r2").mean()
          for s in ("math", "knowledge", "reading")}
    assert min(r2.values()) > 0.3, r2  # the text skills are readable from the words
    glyph_r2 = cross_val_score(Ridge(alpha=1.0), words[np.flatnonzero(has & (table.datasets == "ocr"))],
                               lat["glyph"][table.datasets[has] == "ocr"], cv=folds, scoring="r2").mean()
    assert glyph_r2 < 0.05  # within a dataset, the text says nothing about the image skills


def test_spec_parsing_and_cache_dir(monkeypatch, tmp_path: Path) -> None:
    assert parse_synthetic_spec("synthetic") == {"n_instances": 2000, "seed": 0, "image_size": 64}
    assert parse_synthetic_spec("synthetic:n=500,seed=3,size=32") == {"n_instances": 500, "seed": 3, "image_size": 32}
    with pytest.raises(ValueError, match="seed must be an integer"):
        parse_synthetic_spec("synthetic:seed=x")
    monkeypatch.delenv("MMROUTE_CACHE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_cache_dir() == tmp_path / ".mmroute"
    monkeypatch.setenv("MMROUTE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"n_instances=2 \(expected 3\.\.1,000,000"):
        make_synthetic(tmp_path, n_instances=2)
    with pytest.raises(ValueError, match=r"image_size=8 \(expected 16\.\.1024 pixels\)"):
        make_synthetic(tmp_path, n_instances=10, image_size=8)
    # Bounded before anything is drawn: a 100,000 px image would need ~30 GB.
    with pytest.raises(ValueError, match=r"seed=-1 \(expected an integer >= 0\); image_size=100000 \(expected"):
        parse_synthetic_spec("synthetic:image_size=100000,seed=-1")
