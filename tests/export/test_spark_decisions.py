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
