"""Calibrated operating points: out-of-fold on training rows, targets kept on held-out rows,
allowed subsets and the failover ranking of the served model."""

import json

import numpy as np
import pytest
from sklearn.model_selection import KFold

from mmroute.export.calibration import calibrate, out_of_fold_predictions
from mmroute.export.core import router_input
from mmroute.export.mmroute_runtime.calibration import Calibration, operating_points
from mmroute.export.pyfunc import input_frame, save_router_model
from mmroute.features.types import Features
from mmroute.routers import create_router

MODELS = ["cheap", "mid", "strong"]


def _data(n, seed):
    """Queries whose hard part only the expensive models solve; costs 1, 3, 9 with noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    skill = x[:, 0] + 0.5 * x[:, 1]
    correct = (skill[:, None] + np.array([-0.8, 0.0, 0.8]) + rng.normal(scale=0.7, size=(n, 3)) > 0).astype(float)
    correct[rng.random(correct.shape) < 0.01] = np.nan  # missing outcomes are filled, not fatal
    cost = np.array([1.0, 3.0, 9.0]) * np.exp(0.3 * x[:, 2:5] + rng.normal(scale=0.1, size=(n, 3)))
    return Features.from_array(x), correct, cost


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import mlflow

    train_f, train_c, train_k = _data(1500, 0)
    test_f, test_c, test_k = _data(3000, 1)
    router = create_router("linear").fit(train_f, train_c, train_k)
    cal = calibrate(router, train_f, train_c, train_k, MODELS, n_folds=3, seed=0)
    path = tmp_path_factory.mktemp("calibrated") / "model"
    save_router_model(router, test_f.subset(np.arange(64)), MODELS, path, calibration=cal)
    model = mlflow.pyfunc.load_model(str(path))
    frame = input_frame(router_input(router, test_f))
    return model, frame, cal, path, (np.nan_to_num(test_c, nan=0.5), test_k)


def _route(model, frame, params):
    from mmroute.pipeline.route import route_frame

    return route_frame(model, frame, params, chunk_size=1000)


def test_out_of_fold_rows_come_from_clones_that_never_saw_them():
    features, correct, cost = _data(90, 2)
    router = create_router("linear")
    perf, pcost = out_of_fold_predictions(router, features, correct, cost, n_folds=3, seed=5)
    for fit_rows, held in KFold(3, shuffle=True, random_state=5).split(np.arange(90)):
        clone = create_router("linear").fit(features.subset(fit_rows), correct[fit_rows], cost[fit_rows])
        p, c = clone.predict(features.subset(held))
        np.testing.assert_allclose(perf[held], p)
        np.testing.assert_allclose(pcost[held], c)
    with pytest.raises(ValueError, match="n_folds must be an integer >= 2"):
        out_of_fold_predictions(router, features, correct, cost, n_folds=1)


def test_operating_point_table_is_consistent():
    rng = np.random.default_rng(0)
    perf, pcost = rng.random((200, 3)), rng.random((200, 3)) * [1, 3, 9]
    correct, cost = (rng.random((200, 3)) < [0.3, 0.5, 0.8]).astype(float), pcost * 1.1
    table = operating_points(perf, pcost, correct, cost, MODELS)
    assert set(table["rule"]) == {"budget", "tradeoff"}
    np.testing.assert_allclose(table[[f"share_{m}" for m in MODELS]].sum(axis=1), 1.0)
    budget = table[table["rule"] == "budget"]
    assert budget["param"].is_monotonic_increasing
    # Below every predicted cost, every row falls back to its cheapest model ...
    first = budget.iloc[0]
    assert first["expected_cost"] == pytest.approx(cost[np.arange(200), pcost.argmin(1)].mean())
    # ... and above all of them, every row takes its best predicted model.
    assert budget.iloc[-1]["expected_accuracy"] == pytest.approx(correct[np.arange(200), perf.argmax(1)].mean())


def test_calibration_is_stored_in_the_model(served):
    _, _, cal, path, _ = served
    stored = Calibration.load(next(path.rglob("calibration.npz")))
    np.testing.assert_allclose(stored.table()["expected_cost"], cal.table()["expected_cost"])
    meta = json.loads(next(path.rglob("router_meta.json")).read_text())
    assert meta["calibration"]["source"].startswith("the router's out-of-fold") and meta["fallback"] == "cheapest"


def test_a_guarded_router_is_calibrated_on_its_own_out_of_fold_rows_without_a_refit(monkeypatch):
    import mmroute.export.calibration as calibration

    features, correct, cost = _data(300, 3)
    guarded = create_router("linear").fit(features, correct, cost)
    monkeypatch.setattr(calibration, "out_of_fold_predictions",
                        lambda *a, **k: pytest.fail("a guarded router was refitted for calibration"))
    cal = calibrate(guarded, features, correct, cost, MODELS, n_folds=3, seed=0)
    oof = guarded.oof_
    assert cal.n_rows == 300 and cal.info["n_folds"] is None
    np.testing.assert_allclose(cal.perf_pred, guarded.guard_.apply(oof.perf.astype(np.float64)))
    np.testing.assert_allclose(cal.cost_pred, oof.cost_pred)
    # ... whose out-of-fold rows are those of the guard: the validation scores are made from them.
    from mmroute.routers.guard import oof_scores

    scores = oof_scores(guarded.guard_.apply(oof.perf.astype(np.float64)), oof.cost_pred.astype(np.float64),
                        oof.correct.astype(np.float64), oof.cost.astype(np.float64))
    assert scores["budget"]["nAUC"] == pytest.approx(guarded.validation_["budget"]["nAUC"], abs=1e-4)
    monkeypatch.undo()
    unguarded = create_router("linear", guard="off").fit(features, correct, cost)
    assert unguarded.oof_ is None
    assert calibrate(unguarded, features, correct, cost, MODELS, n_folds=3, seed=0).info["n_folds"] == 3


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.8])
def test_target_cost_is_respected_on_held_out_rows(served, quantile):
    model, frame, cal, _, (correct, cost) = served
    table = cal.table()
    lo, hi = table["expected_cost"].min(), table["expected_cost"].max()
    target = float(lo + quantile * (hi - lo))
    out = _route(model, frame, {"target_cost": target})
    realised = cost[np.arange(len(out)), out["model_index"]].mean()
    assert out["within_target"].all() and (out["expected_cost"] <= target).all()
    assert abs(realised - target) / target < 0.15, (realised, target)
    acc = correct[np.arange(len(out)), out["model_index"]].mean()
    assert abs(acc - out["expected_accuracy"][0]) < 0.05


def test_target_quality_is_respected_on_held_out_rows(served):
    model, frame, _, _, (correct, cost) = served
    best_single = correct.mean(axis=0).max()
    for q in (0.8, 0.9):
        out = _route(model, frame, {"target_quality": q})
        acc = correct[np.arange(len(out)), out["model_index"]].mean()
        assert out["within_target"].all()
        assert abs(acc / best_single - q) / q < 0.1, (q, acc / best_single)
    cheaper = _route(model, frame, {"target_quality": 0.8})["expected_cost"][0]
    assert cheaper < _route(model, frame, {"target_quality": 0.9})["expected_cost"][0]


def test_target_below_the_cheapest_point_answers_with_the_cheapest(served):
    model, frame, cal, _, _ = served
    out = _route(model, frame.iloc[:10], {"target_cost": 0.0})
    cheapest = cal.table()["expected_cost"].min()
    assert not out["within_target"].any() and out["expected_cost"][0] == pytest.approx(cheapest)
    unreachable = _route(model, frame.iloc[:10], {"target_quality": 1.5})
    assert not unreachable["within_target"].any()


def test_allowed_subset_and_ranking(served):
    model, frame, cal, _, _ = served
    out = _route(model, frame.iloc[:200], {"models": "strong,cheap", "budget": 4.0})
    assert set(out["model"]) <= {"cheap", "strong"}
    assert all(sorted(r) == ["cheap", "strong"] and r[0] == m for r, m in zip(out["ranking"], out["model"]))
    full = _route(model, frame.iloc[:200], {"budget": 4.0})
    assert all(len(r) == 3 and r[0] == m for r, m in zip(full["ranking"], full["model"]))
    # Failing over down the full ranking without "mid" is the same as asking for {cheap, strong}.
    assert [[n for n in r if n != "mid"][0] for r in full["ranking"]] == out["model"].tolist()
    # Targets hold for the models that are up: the table of that subset is used.
    sub = _route(model, frame.iloc[:50], {"models": "cheap,mid", "target_cost": 2.5})
    assert set(sub["model"]) <= {"cheap", "mid"}
    assert sub["expected_cost"][0] == cal.for_cost(2.5, [0, 1]).expected_cost


def test_unknown_model_in_subset_is_named(served):
    from mlflow.exceptions import MlflowException

    model, frame, _, _, _ = served
    with pytest.raises(MlflowException, match=r"unknown model\(s\) \['gpt-9'\]"):
        model.predict(frame.iloc[:2], params={"models": "cheap,gpt-9"})
