"""Single-model, oracle and random baselines; the reference figures on the shared table."""

from __future__ import annotations

import numpy as np
import pytest

from mmroute.evaluation import (
    budget_sweep,
    fill_missing,
    oracle_metrics,
    oracle_point,
    oracle_predictions,
    random_metrics,
    single_model_points,
)


def test_fill_missing_uses_column_means_over_given_rows():
    correct = np.array([[1.0, np.nan], [0.0, np.nan], [np.nan, np.nan]])
    cost = np.array([[1.0, 2.0], [3.0, np.nan], [np.nan, 4.0]])
    c, k = fill_missing(correct, cost)
    np.testing.assert_array_equal(c, [[1.0, 0.0], [0.0, 0.0], [0.5, 0.0]])
    np.testing.assert_array_equal(k, [[1.0, 2.0], [3.0, 3.0], [2.0, 4.0]])
    assert np.isnan(correct[0, 1])  # inputs untouched


def test_best_single_ties_go_to_the_cheaper_model():
    correct = np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    cost = np.array([[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]])
    s = single_model_points(correct, cost, models=["a", "b", "c"])
    assert s.best_index == 1 and s.best_acc == 0.5 and s.best_cost == 1.0
    assert s.cost_range == (0.5, 2.0)
    assert s.to_dict()["best_model"] == "b"


def test_oracle_conventions():
    # Both models correct on instance 0; model 1 is cheaper there.
    correct = np.array([[1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    cost = np.array([[3.0, 1.0], [3.0, 1.0], [2.0, 1.0]])
    assert oracle_point(correct, cost) == pytest.approx(((1 + 1 + 1) / 3, 2 / 3))
    ref = budget_sweep(*oracle_predictions(correct, cost), correct, cost)
    cheap = budget_sweep(*oracle_predictions(correct, cost, convention="cheapest"), correct, cost)
    # Full budget: the reference oracle keeps model 0 on instance 0 (lowest index among correct).
    assert ref.costs[-1] == pytest.approx((3 + 1 + 2) / 3)
    assert cheap.costs[-1] == pytest.approx(1.0) and cheap.accs[-1] == pytest.approx(2 / 3)
    m = oracle_metrics(correct, cost, convention="cheapest")
    assert m["Ps"] == pytest.approx(2 / 3) and m["QNC"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="convention='best' is not one of"):
        oracle_predictions(correct, cost, convention="best")


def test_random_is_seeded_and_centred_on_the_single_models():
    rng = np.random.default_rng(0)
    correct, cost = (rng.random((300, 4)) < 0.5).astype(float), rng.random((300, 4))
    a, b = random_metrics(correct, cost, seed=7), random_metrics(correct, cost, seed=7)
    assert a == b
    assert a != random_metrics(correct, cost, seed=8)
    assert a["acc"] == pytest.approx(correct.mean()) and a["cost"] == pytest.approx(cost.mean())
    with pytest.raises(ValueError, match="n_trials must be >= 1, got 0"):
        random_metrics(correct, cost, n_trials=0)


@pytest.mark.shared_data
def test_reference_oracle_figures_on_mmlu_pro(shared_data):
    import pyarrow.parquet as pq
    from sklearn.model_selection import train_test_split

    path = shared_data / "mmlu_pro_routing.parquet"
    models = [c[: -len("_correct")] for c in pq.read_schema(path).names if c.endswith("_correct")]
    df = pq.read_table(path, columns=[f"{m}_{k}" for m in models for k in ("correct", "cost")]).to_pandas()
    correct = df[[f"{m}_correct" for m in models]].to_numpy(float)
    cost = df[[f"{m}_cost" for m in models]].to_numpy(float)
    _, test = train_test_split(np.arange(len(df)), train_size=0.2, shuffle=True, random_state=42)
    c, k = fill_missing(correct[test], cost[test])
    # ANCHORS.md, train fraction 0.2: best single 0.7014, oracle nAUC 0.8924, Ps 0.9524.
    assert single_model_points(c, k).best_acc == pytest.approx(0.7014, abs=5e-5)
    m = oracle_metrics(c, k)
    assert m["nAUC"] == pytest.approx(0.8924, abs=5e-5)
    assert m["Ps"] == pytest.approx(0.9524, abs=5e-5)
