"""Lightning DDP on CPU processes: a 2-process fit matches the 1-process one, logs once (rank 0)
into the caller's run, and exports the same way."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from mmroute.evaluation import evaluate_predictions  # noqa: E402
from mmroute.routers.neural import MLPRouter  # noqa: E402
from router_data import feats, tiny_problem  # noqa: E402

pytestmark = pytest.mark.slow
OPTS = dict(hidden=(16, 8), max_epochs=6, batch_size=32, patience=50, accelerator="cpu", seed=0,
            enable_progress_bar=False)


def _fit(devices, **extra):
    x, correct, cost = tiny_problem(n=240, d=6, m=3, seed=4)
    router = MLPRouter(devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", **OPTS, **extra)
    train, test = np.arange(160), np.arange(160, 240)
    router.fit(feats(x[train]), correct[train], cost[train])
    perf, pc = router.predict(feats(x[test]))
    score = evaluate_predictions(perf, pc, correct[test], cost[test]).metrics["nAUC"]
    return router, score, feats(x[test])


def test_two_process_fit_matches_one_process_logs_once_and_exports(tmp_path):
    import mlflow

    from mmroute.export import export_router
    from mmroute.tracking import bind_lightning_logger

    one, score_one, test = _fit(1)
    with mlflow.start_run() as run:
        two = MLPRouter(devices=2, strategy="ddp_spawn", **OPTS)
        bind_lightning_logger(two)
        x, correct, cost = tiny_problem(n=240, d=6, m=3, seed=4)
        two.fit(feats(x[:160]), correct[:160], cost[:160])
    perf, pc = two.predict(test)
    score_two = evaluate_predictions(perf, pc, correct[160:], cost[160:]).metrics["nAUC"]

    r1, r2 = one.train_results_[0], two.train_results_[0]
    assert r2.epochs_run == r1.epochs_run == 6 and len(r2.history) == 6
    assert r2.best_score == pytest.approx(r1.best_score, rel=0.05)  # same validation loss, within 5%
    assert score_two == pytest.approx(score_one, abs=0.03)
    p1, _ = one.predict(test)
    assert np.abs(perf - p1).max() < 0.15  # same model up to DDP's batch sharding

    client = mlflow.MlflowClient()
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert len(history) == 6  # rank 0 only: one point per epoch, not one per process
    assert [h.step for h in history] == sorted(h.step for h in history)
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 6
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no run of its own

    result = export_router(two, test, tmp_path / "ddp.onnx")
    assert (tmp_path / "ddp.onnx").is_file()
    assert result.max_abs_diff_perf <= 1e-4 and result.max_abs_diff_cost <= 1e-4


def test_devices_is_validated():
    with pytest.raises(ValueError, match=r"devices=0 \(expected an integer >= 1\)"):
        MLPRouter(devices=0)
    with pytest.raises(ValueError, match=r"strategy='ring'"):
        MLPRouter(strategy="ring")
