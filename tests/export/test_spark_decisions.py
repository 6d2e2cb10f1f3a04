"""Decisions of batch routing are the served model's output plus the chosen model's predictions."""

import pandas as pd

from mmroute.export.spark import decisions_frame


def test_decisions_frame_keeps_the_model_output_and_adds_the_chosen_predictions():
    models = ["a", "b"]
    pred = pd.DataFrame({"id": ["x", "y"], "model": ["b", "a"], "model_index": [1, 0],
                         "ranking": [["b", "a"], ["a", "b"]], "within_budget": [True, False],
                         "perf_a": [0.1, 0.9], "perf_b": [0.5, 0.2], "cost_a": [1.0, 2.0], "cost_b": [3.0, 4.0]})
    out = decisions_frame(pred, models)
    assert list(out.columns) == ["model", "model_index", "ranking", "within_budget", "predicted_perf",
                                 "predicted_cost"]
    assert out["ranking"].tolist() == [["b", "a"], ["a", "b"]]
    assert out["predicted_cost"].tolist() == [3.0, 2.0] and out["predicted_perf"].tolist() == [0.5, 0.9]
    kept = decisions_frame(pred, models, keep_predictions=True)
    assert list(kept.columns)[-4:] == ["perf_a", "perf_b", "cost_a", "cost_b"]


class _Conf:
    def __init__(self, values):
        self.values = dict(values)

    def get(self, key, default=None):
        return self.values.get(key, default)

    def set(self, key, value):
        self.values[key] = value


class _Session:
    def __init__(self, values):
        self.conf = _Conf(values)


def test_row_batches_follow_where_the_model_is_loaded(tiny_data, fitted, tmp_path):
    """A local master loads the model in the task with the model_config given: the model takes
    the session's row batches (one ONNX Runtime thread per task). On a cluster MLflow loads it
    without one, so the batches are lowered to the logged max_rows instead."""
    import numpy as np

    from mmroute.export.pyfunc import save_router_model
    from mmroute.export.spark import BATCH_CONFS, _batch_config

    path = tmp_path / "model"
    save_router_model(fitted("linear_mf"), tiny_data[0].subset(np.arange(160, 240)), ["a", "b", "c"], path,
                      model_config={"max_rows": 2048})
    local = _Session({"spark.master": "local[2]", "spark.task.cpus": "1"})
    assert _batch_config(local, str(path)) == {"max_rows": 10_000, "intra_op_threads": 1}
    assert local.conf.values == {"spark.master": "local[2]", "spark.task.cpus": "1"}
    cluster = _Session({"spark.master": "spark://host:7077"})
    assert _batch_config(cluster, str(path)) is None
    assert {k: cluster.conf.values[k] for k, _ in BATCH_CONFS} == {k: "2048" for k, _ in BATCH_CONFS}
