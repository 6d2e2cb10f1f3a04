"""linear and linear_mf, and the masked ridge they share."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import TruncatedSVD
from sklearn.linear_model import Ridge, RidgeCV

from mmroute.routers import NotFittedError
from mmroute.routers.regression import fit_masked_ridge
from router_data import feats, raw_router, tiny_problem


def test_masked_ridge_equals_sklearn_ridge_on_the_observed_rows():
    x, correct, _ = tiny_problem(missing=0.25)
    coef, intercept, alpha = fit_masked_ridge(x, correct, alpha=2.0)
    assert (alpha == 2.0).all()
    for j in range(correct.shape[1]):
        rows = ~np.isnan(correct[:, j])
        ref = Ridge(alpha=2.0).fit(x[rows].astype(np.float64), correct[rows, j])
        np.testing.assert_allclose(coef[j], ref.coef_, atol=1e-10)
        np.testing.assert_allclose(intercept[j], ref.intercept_, atol=1e-10)
    # Filling the missing rows with 0 instead would change model 0's fit.
    filled = Ridge(alpha=2.0).fit(x, np.nan_to_num(correct[:, 0]))
    assert not np.allclose(coef[0], filled.coef_)


def test_masked_ridge_chooses_each_penalty_by_leave_one_out():
    x, correct, cost = tiny_problem(n=80)
    y = np.column_stack([correct, cost])
    grid = (0.01, 0.1, 1.0, 10.0, 100.0)
    coef, intercept, alpha = fit_masked_ridge(x, y, alphas=grid)
    ref = RidgeCV(alphas=grid, alpha_per_target=True).fit(x.astype(np.float64), y)
    np.testing.assert_array_equal(alpha, ref.alpha_)
    np.testing.assert_allclose(coef, ref.coef_, atol=1e-9)
    np.testing.assert_allclose(intercept, ref.intercept_, atol=1e-9)


def test_linear_mf_reproduces_the_reference_pipeline():
    x, correct, cost = tiny_problem(n=80, d=12)
    router = raw_router("linear_mf", rank=5, alpha=1.0, seed=42).fit(feats(x), correct, cost)
    perf, pc = router.predict(feats(x[:9]))
    # MMR-Bench LinearMFRouter: TruncatedSVD(rank, random_state) then Ridge(alpha) heads.
    svd = TruncatedSVD(n_components=5, random_state=42)
    z = svd.fit_transform(x)
    zt = svd.transform(x[:9])
    np.testing.assert_allclose(perf, Ridge(alpha=1.0).fit(z, correct).predict(zt), atol=1e-6)
    np.testing.assert_allclose(pc, Ridge(alpha=1.0).fit(z, cost).predict(zt), atol=1e-6)


@pytest.mark.parametrize("name, cfg", [("linear", {}), ("linear", {"alphas": (0.1, 10.0)}),
                                       ("linear_mf", {"rank": 4})])
def test_shapes_determinism_and_affine_map(name, cfg):
    x, correct, cost = tiny_problem(missing=0.2)
    with pytest.raises(NotFittedError):
        raw_router(name, **cfg).affine_map()
    router = raw_router(name, seed=1, **cfg).fit(feats(x), correct, cost)
    perf, pc = router.predict(feats(x[:6]))
    assert perf.shape == pc.shape == (6, 3) and np.isfinite(perf).all()
    again = raw_router(name, seed=1, **cfg).fit(feats(x), correct, cost).predict(feats(x[:6]))
    np.testing.assert_array_equal(perf, again[0])
    w, b = router.affine_map()
    assert w.shape == (x.shape[1], 6) and b.shape == (6,)
    np.testing.assert_allclose(x[:6].astype(np.float64) @ w + b, np.hstack([perf, pc]), atol=1e-6)


def test_linear_mf_clips_its_rank():
    x, correct, cost = tiny_problem(n=30, d=6)
    assert raw_router("linear_mf").fit(feats(x), correct, cost).svd_.n_components == 6
    router = raw_router("linear_mf").fit(feats(x[:4]), correct[:4], cost[:4])
    assert router.svd_.n_components == 4
    assert router.predict(feats(x))[0].shape == (30, 3)


def test_least_squares_without_penalty():
    x, correct, cost = tiny_problem(n=50, d=4)
    router = raw_router("linear", alpha=0.0).fit(feats(x), correct, cost)
    design = np.column_stack([np.ones(len(x)), x.astype(np.float64)])
    beta, *_ = np.linalg.lstsq(design, correct, rcond=None)
    np.testing.assert_allclose(router.predict(feats(x))[0], design @ beta, atol=1e-8)


@pytest.mark.parametrize("name, bad, match", [
    ("linear", {"alpha": -1.0}, r"alpha=-1.0 \(expected a number >= 0\)"),
    ("linear", {"alphas": (1.0, 0.0)}, r"alphas=\(1.0, 0.0\) \(expected a sequence of numbers > 0"),
    ("linear_mf", {"rank": 0, "alpha": -2.0}, r"alpha=-2.0.*rank=0 \(expected an integer >= 1\)"),
])
def test_bad_config_names_the_value(name, bad, match):
    with pytest.raises(ValueError, match=match):
        raw_router(name, **bad)


def test_both_heads_in_one_solve_equal_separate_solves():
    """Performance and cost columns are solved together (one eigendecomposition per missing
    pattern); each head is what its own solve gives, penalties included."""
    x, correct, cost = tiny_problem(n=80, m=3, seed=4, missing=0.2)
    alphas = (0.1, 1.0, 10.0)
    router = raw_router("linear", alphas=alphas).fit(feats(x), correct, cost)
    for head, y in (("perf", correct), ("cost", cost)):
        coef, intercept, alpha = fit_masked_ridge(x, y, alphas=alphas)
        np.testing.assert_allclose(getattr(router, f"{head}_coef_"), coef, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(getattr(router, f"{head}_intercept_"), intercept, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(getattr(router, f"{head}_alpha_"), alpha)
