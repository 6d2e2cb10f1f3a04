import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mmroute.export import router_input
from mmroute.export.pyfunc import input_frame, predict_frame_arrays, save_router_model

MODELS = ["small", "medium", "large"]


@pytest.fixture(scope="module")
def saved(tiny_data, fitted, tmp_path_factory):
    """A fitted linear_mf router saved as an MLflow model directory, with the rows that check it."""
    router = fitted("linear_mf")
    held_out = tiny_data[0].subset(np.arange(160, 240))
    path = tmp_path_factory.mktemp("pyfunc") / "model"
    result = save_router_model(router, held_out, MODELS, path,
                               feature_info={"spec": "offline", "fusion": "mean"})
    return router, held_out, path, result


@pytest.fixture(scope="module")
def loaded(saved):
    import mlflow

    return mlflow.pyfunc.load_model(str(saved[2]))


def test_signature_declares_output_and_params(loaded, saved):
    sig = loaded.metadata.signature
    # No input schema (MLflow would drop unknown columns instead of refusing them); the request's
    # columns are documented in the metadata and validated by predict().
    assert sig.inputs is None
    meta = json.loads(next(saved[2].rglob("router_meta.json")).read_text())
    assert set(meta["input_columns"]) == {"question", "image", "context", "features", "id"}
    assert {p.name: p.default for p in sig.params.params} == {
        "budget": None, "tradeoff": None, "target_cost": None, "target_quality": None, "models": None,
        "fallback": None}
    assert "model" in sig.outputs.input_names() and "cost_large" in sig.outputs.input_names()


def test_metadata_records_models_width_and_features(saved):
    meta = json.loads(next(saved[2].rglob("router_meta.json")).read_text())
    assert meta["models"] == MODELS and meta["input_width"] == 20
    assert meta["input_layout"] == [["fused", 20]] and meta["features"]["spec"] == "offline"
    assert meta["export"]["max_abs_diff_perf"] <= 1e-4 and meta["router"] == "linear_mf"


def test_predictions_match_router_and_decision_rules(saved, loaded):
    router, held_out, _, _ = saved
    x = router_input(router, held_out)
    perf_ref, cost_ref = router.predict(held_out)
    ids = [f"q{i}" for i in range(len(x))]
    out = loaded.predict(input_frame(x, ids))
    assert out["id"].tolist() == ids
    names, perf, cost = predict_frame_arrays(out)
    assert names == MODELS
    np.testing.assert_allclose(perf, perf_ref, atol=1e-4)
    np.testing.assert_allclose(cost, cost_ref, atol=1e-4)
    assert out["model"].tolist() == [MODELS[j] for j in perf.argmax(1)]

    budget = float(np.median(cost))
    out = loaded.predict(input_frame(x), params={"budget": budget})
    affordable = cost <= budget
    for i, name in enumerate(out["model"]):
        j = MODELS.index(name)
        if affordable[i].any():
            assert affordable[i, j] and perf[i, j] == perf[i][affordable[i]].max()
        else:
            assert j == cost[i].argmin() and not out["within_budget"][i]
    out = loaded.predict(input_frame(x), params={"tradeoff": 0.2})
    assert out["model_index"].tolist() == (perf - 0.2 * cost).argmax(1).tolist()


@pytest.mark.parametrize("frame, message", [
    (pd.DataFrame({"features": [[0.0] * 19]}), "has 19 values, the router expects 20"),
    (pd.DataFrame({"features": [[0.0] * 20, [np.nan] + [0.0] * 19]}), r"rows \[1\].*NaN"),
    (pd.DataFrame({"feats": [[0.0] * 20]}), "features"),
])
def test_malformed_input_is_rejected_with_a_message(loaded, frame, message):
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=message):
        loaded.predict(frame)


def test_rows_of_arrays_route_like_rows_of_lists(saved, loaded):
    """Arrow and Parquet readers hand over one numpy array per row (stacked in one pass); the
    decisions equal those of plain lists, and bad rows are still refused by row."""
    from mlflow.exceptions import MlflowException

    x = saved[1].fused.astype(np.float64)
    as_lists = loaded.predict(pd.DataFrame({"features": [list(map(float, r)) for r in x]}),
                              params={"budget": 3.0})
    as_arrays = loaded.predict(pd.DataFrame({"features": list(x)}), params={"budget": 3.0})
    as_f32 = loaded.predict(pd.DataFrame({"features": list(x.astype(np.float32))}), params={"budget": 3.0})
    pd.testing.assert_frame_equal(as_arrays, as_lists)
    pd.testing.assert_frame_equal(as_f32, as_lists)
    assert as_arrays["ranking"].map(type).eq(list).all()
    bad = list(x[:3])
    bad[2] = np.concatenate([bad[2][:5], [np.inf], bad[2][6:]])
    with pytest.raises(MlflowException, match=r"rows \[2\].*NaN or infinite"):
        loaded.predict(pd.DataFrame({"features": bad}))
    with pytest.raises(MlflowException, match="row 1: 'features' has 19 values"):
        loaded.predict(pd.DataFrame({"features": [x[0], x[1][:19]]}))


def test_onnx_threads_can_be_set_at_load_time(saved):
    """intra_op_threads is logged (None: onnxruntime's default) so that a load-time model_config
    may set it: MLflow overrides only logged keys (Spark routing sets one thread per task)."""
    import mlflow

    logged = mlflow.models.get_model_info(str(saved[2])).flavors["python_function"]["config"]
    assert "intra_op_threads" in logged and logged["intra_op_threads"] is None
    model = mlflow.pyfunc.load_model(str(saved[2]), model_config={"intra_op_threads": 1, "max_rows": 5000})
    impl = model.unwrap_python_model()
    assert impl.threads == 1 and impl.max_rows == 5000
    assert impl.session.get_session_options().intra_op_num_threads == 1


@pytest.mark.parametrize("params, message", [
    ({"budget": 1.0, "tradeoff": 1.0}, "at most one of"),
    ({"tradeoff": -1.0}, "tradeoff must be a finite number >= 0"),
    ({"budget": float("inf")}, "budget must be a finite number"),
    ({"target_cost": 0.1}, "exported without them"),
    ({"models": "small,huge"}, r"unknown model\(s\) \['huge'\]"),
    ({"fallback": "nearest"}, "fallback='nearest' is not one of"),
    ({"speed": 1.0}, r"unknown params \['speed'\]"),
])
def test_bad_params_are_rejected_with_a_message(saved, loaded, params, message):
    from mlflow.exceptions import MlflowException

    x = router_input(saved[0], saved[1])[:2]
    with pytest.raises(MlflowException, match=message):
        loaded.unwrap_python_model().predict(None, input_frame(x), params=params)


def test_loading_needs_no_mmroute_code(saved, tmp_path):
    # A fresh interpreter in which `import mmroute` fails still loads and runs the model.
    x = router_input(saved[0], saved[1])[:3]
    script = (
        "import sys, json; sys.modules['mmroute'] = None\n"
        "import mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model({str(saved[2])!r})\n"
        f"out = m.predict(pd.DataFrame({{'features': {x.tolist()!r}}}), params={{'budget': 10.0}})\n"
        "print(json.dumps(out['model'].tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert all(name in MODELS for name in json.loads(proc.stdout.strip().splitlines()[-1]))
