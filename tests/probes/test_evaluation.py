"""AUROC, hybrid small/large curve, image perturbations, leave-one-dataset-out, plots."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmroute.probes.evaluation import (
    auroc,
    delta_auc,
    hybrid_curve,
    leave_one_dataset_out,
    parse_perturbations,
    perturb_image,
    perturb_table,
    plot_hybrid,
    plot_roc,
    reference_curves,
)
from probe_tiny import tiny_table


def test_auroc_matches_pairwise_definition_and_handles_one_class():
    y = np.array([0, 1, 1, 0, 1, np.nan])
    s = np.array([0.2, 0.9, 0.4, 0.5, 0.7, 0.0])
    pos, neg = s[:5][y[:5] == 1], s[:5][y[:5] == 0]
    pairwise = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert auroc(y, s) == pytest.approx(pairwise)
    assert np.isnan(auroc(np.ones(4), np.arange(4.0)))


def test_hybrid_curve_defers_lowest_scores_first():
    small = np.array([1, 0, 1, 0], dtype=float)
    large = np.array([1, 1, 0, 1], dtype=float)
    scores = np.array([0.9, 0.1, 0.8, 0.3])  # a perfect probe: the two wrong ones score lowest
    c = hybrid_curve(scores, small, large, ratios=np.array([0.0, 0.25, 0.5, 0.75, 1.0]))
    assert c.accuracy.tolist() == [0.5, 0.75, 1.0, 0.75, 0.75]
    assert c.area == pytest.approx(np.trapezoid(c.accuracy, c.ratios))
    default = hybrid_curve(scores, small, large)
    assert default.ratios.size == 101 and default.at(0.0) == 0.5 and default.at(1.0) == 0.75
    refs = reference_curves(small, large)
    assert refs["oracle"].area >= default.area >= refs["random"].area - 1e-12
    assert refs["random"].accuracy[50] == pytest.approx(0.625)
    ties = hybrid_curve(np.zeros(4), small, large, ratios=np.array([0.25]))
    assert ties.accuracy[0] == 0.5  # ties: instance order, the first (correct on both) goes first
    with pytest.raises(ValueError, match="complete outcomes"):
        hybrid_curve(scores, np.array([1, np.nan, 0, 1]), large)


def test_perturbations_change_images_more_as_strength_grows(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8))
    base = np.asarray(img, dtype=float)
    for kind, weak, strong in [("gaussian_noise", 0.02, 0.3), ("gaussian_blur", 0.5, 3), ("jpeg", 90, 5)]:
        d_weak = np.abs(np.asarray(perturb_image(img, kind, weak), dtype=float) - base).mean()
        d_strong = np.abs(np.asarray(perturb_image(img, kind, strong), dtype=float) - base).mean()
        assert 0 < d_weak < d_strong, kind
    assert parse_perturbations("noise:0.1, jpeg:30,blur:2") == [
        ("gaussian_noise", 0.1), ("jpeg", 30.0), ("gaussian_blur", 2.0)]
    with pytest.raises(ValueError, match="unknown perturbation 'fog'.*'x' is not a number"):
        parse_perturbations("fog:1,jpeg:x")
    with pytest.raises(ValueError, match="quality"):
        perturb_image(img, "jpeg", 0)


def test_perturb_table_writes_new_images_and_keeps_outcomes(tmp_path):
    table = tiny_table(4, image_dir=tmp_path)
    out = perturb_table(table, "gaussian_blur", 1.0, tmp_path / "p")
    assert out.has_images.tolist() == table.has_images.tolist() == [True, False, True, False]
    assert all(str(tmp_path / "p") in p for p in out.image_paths[out.has_images])
    for before, after in zip(table.image_paths[table.has_images], out.image_paths[out.has_images]):
        assert not np.array_equal(np.asarray(Image.open(before)), np.asarray(Image.open(after)))
    assert np.array_equal(out.correct, table.correct) and list(out.ids) == list(table.ids)
    assert delta_auc(0.9, [0.8, 0.7]) == pytest.approx(0.15)


def test_leave_one_dataset_out_and_plots(tmp_path):
    splits = leave_one_dataset_out(np.array(["a", "b", "a", "c"]))
    assert [(d, tr.tolist(), te.tolist()) for d, tr, te in splits] == [
        ("a", [1, 3], [0, 2]), ("b", [0, 2, 3], [1]), ("c", [0, 1, 2], [3])]
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_dataset_out(np.array(["a", "a"]))
    y = np.array([0, 1, 1, 0, 1.0])
    s = np.array([0.1, 0.8, 0.6, 0.3, 0.2])
    curve = hybrid_curve(s, y, np.ones(5))
    fig = plot_hybrid({"probe": curve}, references=reference_curves(y, np.ones(5)))
    fig.savefig(tmp_path / "h.png")
    plot_roc({"probe": s}, y).savefig(tmp_path / "r.png")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG" and (tmp_path / "r.png").stat().st_size > 1000
