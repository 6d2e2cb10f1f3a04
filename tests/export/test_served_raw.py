"""The logged model is the whole router: raw query (text, image) -> decision, checked against training.

Tiny encoders only: the offline encoder, a 1-layer random BERT as the sentence-transformers model and
a tiny random OpenCLIP; routers linear_mf (reads fused vectors) and fusion_mf (text, image, mask).
"""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from mmroute.export.core import ExportParityError
from mmroute.export.pyfunc import predict_frame_arrays, save_router_model
from mmroute.features import build_feature_pipeline
from mmroute.routers import create_router
from raw_models import MODELS, make_table, raw_records, tiny_bert_dir, tiny_clip_dir

N_TRAIN = 24
ROUTERS = {"linear_mf": dict(rank=3),
           "fusion_mf": dict(d_proj=8, hidden=(8,), latent=4, cost_latent=2, max_epochs=2, batch_size=16,
                             enable_progress_bar=False, val_fraction=0.0)}


def _build(tmp, spec: str, fusion: str, router_name: str, **save_options):
    table = make_table(tmp / "images")
    train, test = table.subset(np.arange(N_TRAIN)), table.subset(np.arange(N_TRAIN, table.n_instances))
    pipe = build_feature_pipeline(spec, fusion=fusion, use_cache=False, device="cpu", progress=False).fit(train)
    train_f, test_f = pipe.transform(train), pipe.transform(test)
    router = create_router(router_name, **ROUTERS[router_name]).fit(train_f, train.correct, train.cost)
    path = tmp / "model"
    result = save_router_model(router, test_f, list(MODELS), path, pipeline=pipe, check_table=test, **save_options)
    return router, pipe, test, test_f, path, result


@pytest.fixture(scope="module")
def offline_model(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("offline"), "offline:dim=16", "mean", "fusion_mf")


@pytest.fixture(scope="module")
def offline_loaded(offline_model):
    import mlflow

    return mlflow.pyfunc.load_model(str(offline_model[4]))


def _check_parity(loaded, router, test, test_f):
    out = loaded.predict(pd.DataFrame(raw_records(test)))
    names, perf, cost = predict_frame_arrays(out)
    perf_ref, cost_ref = router.predict(test_f)
    assert names == list(MODELS) and out["id"].tolist() == list(test.ids)
    np.testing.assert_allclose(perf, perf_ref, atol=1e-4)
    np.testing.assert_allclose(cost, cost_ref, atol=1e-4)


def test_offline_raw_text_and_image_rows_match_training(offline_model, offline_loaded):
    router, _, test, test_f, path, _ = offline_model
    assert test_f.image_mask.any() and not test_f.image_mask.all()  # both kinds of rows are checked
    _check_parity(offline_loaded, router, test, test_f)
    meta = json.loads(next(path.rglob("router_meta.json")).read_text())
    check = meta["served_check"]
    assert check["n_image_rows"] > 0 and check["n_rows"] > check["n_image_rows"]
    assert max(check["max_abs_diff"].values()) <= 1e-4
    assert meta["features"]["serving"] == {"encoder": "offline:dim=16", "text": "tfidf", "image": "imagestats",
                                           "fusion": "mean"}


def test_logged_example_is_a_raw_query_with_an_image(offline_model, offline_loaded):
    path = offline_model[4]
    example = json.loads((path / "serving_input_example.json").read_text())["dataframe_split"]
    cols = example["columns"]
    assert {"question", "image"} <= set(cols) and "features" not in cols
    first = dict(zip(cols, example["data"][0]))
    assert isinstance(first["question"], str) and base64.b64decode(first["image"])[:4] == b"\x89PNG"
    out = offline_loaded.predict(pd.DataFrame(example["data"], columns=cols))
    assert len(out) == 2 and out["model"].isin(MODELS).all()


@pytest.mark.slow
@pytest.mark.parametrize("spec, fusion, router_name", [
    ("st:BERT", "mean", "linear_mf"),
    ("openclip:CLIP", "adaptive", "fusion_mf"),
    ("offline:dim=16", "concat", "linear_mf"),
])
def test_encoders_served_end_to_end(tmp_path, spec, fusion, router_name):
    import mlflow

    spec = spec.replace("BERT", str(tiny_bert_dir(tmp_path / "bert")))
    spec = spec.replace("CLIP", "local-dir:" + str(tiny_clip_dir(tmp_path / "clip")))
    router, _, test, test_f, path, _ = _build(tmp_path, spec, fusion, router_name)
    _check_parity(mlflow.pyfunc.load_model(str(path)), router, test, test_f)


def test_served_model_loads_and_predicts_without_torch_or_mmroute(offline_model, tmp_path):
    _, _, test, _, path, _ = offline_model
    request = tmp_path / "request.json"
    request.write_text(json.dumps(raw_records(test)[:4]))
    script = textwrap.dedent(f"""
        import importlib.abc, json, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("torch", "mmroute", "sklearn", "skl2onnx", "transformers"):
                    raise ImportError("blocked import of " + name)
                return None

        sys.meta_path.insert(0, Block())
        sys.path = [p for p in sys.path if "/src" not in p]
        import mlflow, pandas as pd
        model = mlflow.pyfunc.load_model({str(path)!r})
        out = model.predict(pd.DataFrame(json.load(open({str(request)!r}))))
        bad = [m for m in sys.modules if m.split(".")[0] in ("torch", "mmroute")]
        assert not bad, bad
        print("ROWS", len(out), out["model"].tolist())
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ROWS 4" in proc.stdout


def _png(size=(48, 40)) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


@pytest.mark.parametrize("rows, message", [
    ([{"context": "no question"}], "'question'"),
    ([{"question": None}], "row 0: 'question' is missing"),
    ([{"question": 42}], "row 0: 'question' must be a string, got int 42"),
    ([{"question": "q", "image": "not base64 !!"}], "row 0: 'image' is not valid base64"),
    ([{"question": "q", "image": base64.b64encode(b"plain text, not pixels").decode()}], "not a PNG or JPEG"),
    ([{"question": "q"}, {"question": "q", "image": _png((200, 200))}], "row 1: 'image' is 200x200 = 40000 pixels"),
    ([{"question": "q", "colour": "red"}], "unknown input columns ['colour']"),
    ([{"question": "q"}] * 9, "request has 9 rows, above the limit of 8"),
    ([{"question": "q", "features": [0.0] * 3}], "both 'features' and raw query columns"),
    ([], "no rows"),
])
def test_bad_raw_requests_name_the_problem(offline_model, rows, message):
    import mlflow

    loaded = mlflow.pyfunc.load_model(str(offline_model[4]), model_config={"max_rows": 8, "max_image_pixels": 10_000})
    with pytest.raises(MlflowException, match=None) as err:
        loaded.predict(pd.DataFrame(rows) if rows else pd.DataFrame({"question": []}))
    assert message in str(err.value.message)
    assert err.value.get_http_status_code() == 400


def test_features_column_still_accepted_and_float32_overflow_refused(offline_model, offline_loaded):
    from mmroute.export import router_input

    router, _, _, test_f, _, _ = offline_model
    x = router_input(router, test_f)[:3].astype(np.float64)
    out = offline_loaded.predict(pd.DataFrame({"features": [r.tolist() for r in x]}))
    np.testing.assert_allclose(predict_frame_arrays(out)[1], router.predict(test_f.subset(np.arange(3)))[0], atol=1e-4)
    x[1, 0] = 3.5e38
    with pytest.raises(MlflowException, match=r"rows \[1\] of 'features' hold values beyond float32"):
        offline_loaded.predict(pd.DataFrame({"features": [r.tolist() for r in x]}))


def test_non_finite_predictions_are_refused(offline_model, offline_loaded):
    model = offline_loaded.unwrap_python_model()
    real = model.session

    class Overflowing:  # a graph whose outputs overflow, as float32 arithmetic can on extreme inputs
        def run(self, names, feeds):
            perf, cost = real.run(names, feeds)
            perf[1, 0] = np.inf
            cost[1, 2] = np.nan
            return perf, cost

    model.session = Overflowing()
    try:
        with pytest.raises(MlflowException, match=r"rows \[1\]: the router's perf is not finite") as err:
            offline_loaded.predict(pd.DataFrame(raw_records(offline_model[2])[:3]))
        assert err.value.get_http_status_code() == 400
    finally:
        model.session = real


def test_served_mismatch_fails_the_export_and_writes_nothing(tmp_path, monkeypatch):
    from mmroute.export.mmroute_runtime import features as runtime

    real = runtime.fuse
    monkeypatch.setattr(runtime, "fuse", lambda *a, **k: real(*a, **k) + 1e-3)
    with pytest.raises(ExportParityError, match="served model disagrees with the training-time pipeline"):
        _build(tmp_path, "offline:dim=16", "mean", "linear_mf")
    assert not (tmp_path / "model").exists()


def test_precomputed_encoder_takes_features_only(tmp_path):
    import mlflow

    table = make_table(tmp_path / "images", n=30)
    np.save(tmp_path / "emb.npy", np.random.default_rng(0).normal(size=(30, 6)).astype(np.float32))
    train, test = table.subset(np.arange(20)), table.subset(np.arange(20, 30))
    pipe = build_feature_pipeline(f"precomputed:{tmp_path / 'emb.npy'}", use_cache=False).fit(train)
    router = create_router("linear_mf", rank=2).fit(pipe.transform(train), train.correct, train.cost)
    save_router_model(router, pipe.transform(test), list(MODELS), tmp_path / "model", pipeline=pipe, check_table=test)
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "model"))
    with pytest.raises(MlflowException, match="takes precomputed vectors only.*cannot embed raw text"):
        loaded.predict(pd.DataFrame([{"question": "what is 2 + 2?"}]))
    out = loaded.predict(pd.DataFrame({"features": [[0.1] * 6]}))
    assert out["model"].iloc[0] in MODELS


def test_pixel_limit_agrees_with_pillow_and_the_data_side():
    from PIL import Image

    from mmroute.export.mmroute_runtime.inputs import DEFAULT_MAX_IMAGE_PIXELS

    assert DEFAULT_MAX_IMAGE_PIXELS < Image.MAX_IMAGE_PIXELS
    import mmroute.data as data

    limit = getattr(data, "DEFAULT_MAX_IMAGE_PIXELS", None)
    if limit is None:
        pytest.skip("mmroute.data has no image pixel limit yet")
    assert limit == DEFAULT_MAX_IMAGE_PIXELS
