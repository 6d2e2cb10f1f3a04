"""The gate scores each version with its own served model on the same rows of a raw eval table,
and refuses comparisons it cannot make fairly (different pools, foreign features)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmroute.data.table import OutcomeTable
from mmroute.features.types import Features
from mmroute.registry import PromotionRefused, load_eval_table, promote, save_eval_table


def test_eval_table_round_trips_raw_rows_and_features(tmp_path):
    Image.new("RGB", (5, 3), "blue").save(tmp_path / "a.png")
    Image.new("RGB", (4, 4), "green").save(tmp_path / "b.bmp")  # not servable as is: re-encoded as PNG
    table = OutcomeTable(ids=["x1", "x2", "x3"], datasets=["d"] * 3,
                         questions=["Café — 日本語?", "", "plain"], models=("a", "b"),
                         correct=np.array([[1.0, np.nan], [0.0, 1.0], [1.0, 1.0]]), cost=np.ones((3, 2)),
                         image_paths=np.array([str(tmp_path / "a.png"), None, str(tmp_path / "b.bmp")], dtype=object),
                         contexts=np.array([None, "some context", ""], dtype=object))
    features = Features.from_array(np.arange(6, dtype=np.float32).reshape(3, 2))
    path = save_eval_table(tmp_path / "t.npz", features, table, feature_info={"spec": "offline"})
    loaded = load_eval_table(path)
    assert loaded.rows["id"].tolist() == ["x1", "x2", "x3"]
    assert loaded.rows["question"].tolist() == ["Café — 日本語?", "", "plain"]
    assert loaded.rows["context"].tolist() == [None, "some context", None]
    assert loaded.rows["image"][1] is None
    import base64
    import io

    first = Image.open(io.BytesIO(base64.b64decode(loaded.rows["image"][0])))
    third = Image.open(io.BytesIO(base64.b64decode(loaded.rows["image"][2])))
    assert (first.format, first.size) == ("PNG", (5, 3)) and (third.format, third.size) == ("PNG", (4, 4))
    assert (tmp_path / "a.png").read_bytes() == base64.b64decode(loaded.rows["image"][0])  # bytes unchanged
    np.testing.assert_array_equal(loaded.features.fused, features.fused)
    np.testing.assert_array_equal(loaded.correct, table.correct)
    assert loaded.feature_info == {"spec": "offline"} and loaded.models == ("a", "b")
    raw_only = load_eval_table(save_eval_table(tmp_path / "raw.npz", None, table))
    assert raw_only.features is None and len(raw_only) == 3


def _register(helpers, store, name, router, models, feature_info=None):
    import mlflow

    from mmroute.export.pyfunc import log_router_model

    _, make_split, using = helpers
    _, _, test_f, _ = make_split()
    with using(store):
        experiment = mlflow.get_experiment_by_name("registry-tests").experiment_id
        with mlflow.start_run(experiment_id=experiment):
            info, _ = log_router_model(router, test_f.subset(np.arange(20)), models, registered_model_name=name,
                                       feature_info=feature_info)
    return str(info.registered_model_version)


def test_versions_with_different_pools_are_refused(store, tmp_path, registry_helpers):
    AffineRouter, make_split, _ = registry_helpers
    train_f, train_t, test_f, test_t = make_split()
    three = AffineRouter().fit(train_f, train_t.correct, train_t.cost)
    two = AffineRouter().fit(train_f, train_t.correct[:, :2], train_t.cost[:, :2])
    v1 = _register(registry_helpers, store, "pools", three, ("cheap", "mid", "strong"))
    v2 = _register(registry_helpers, store, "pools", two, ("cheap", "mid"))
    table = save_eval_table(tmp_path / "eval.npz", test_f, test_t)
    promote("pools", v1, to="production", eval_table=table)
    with pytest.raises(PromotionRefused, match=r"different model pool.*only in production \['strong'\]"):
        promote("pools", v2, to="production", eval_table=table)


def test_features_only_version_is_not_scored_on_another_pipelines_features(store, tmp_path, registry_helpers):
    AffineRouter, make_split, _ = registry_helpers
    train_f, train_t, test_f, test_t = make_split()
    router = AffineRouter().fit(train_f, train_t.correct, train_t.cost)
    weak = AffineRouter(signal=0.0).fit(train_f, train_t.correct, train_t.cost)
    models = ("cheap", "mid", "strong")
    v1 = _register(registry_helpers, store, "pipes", weak, models, feature_info={"spec": "st:minilm"})
    v2 = _register(registry_helpers, store, "pipes", router, models, feature_info={"spec": "offline"})
    table = save_eval_table(tmp_path / "eval.npz", test_f, test_t, feature_info={"spec": "offline"})
    with pytest.raises(PromotionRefused, match=r"candidate version cannot be scored.*differ in \['spec'\]"):
        promote("pipes", v1, to="production", eval_table=table)
    promote("pipes", v2, to="production", eval_table=table)  # its own features: scored and promoted
    with pytest.raises(PromotionRefused, match=r"candidate version cannot be scored"):
        promote("pipes", v1, to="production", eval_table=table)


def test_versions_with_different_encoders_compete_on_the_same_raw_rows(store, tmp_path, registry_helpers):
    """Two versions with different feature pipelines (TF-IDF width, fusion): each is scored through its
    own served pipeline on the eval table's raw rows, exactly as its own training-time features score it."""
    import mlflow

    from mmroute.evaluation import evaluate_predictions
    from mmroute.export.pyfunc import log_router_model
    from mmroute.features import build_feature_pipeline
    from mmroute.routers import create_router
    from raw_models import MODELS, make_table

    using = registry_helpers[2]
    table = make_table(tmp_path / "images", n=40)
    train, test = table.subset(np.arange(24)), table.subset(np.arange(24, 40))
    versions, own_scores, features = {}, {}, {}
    for label, spec, fusion in (("wide", "offline:dim=16", "concat"), ("narrow", "offline:dim=6", "mean")):
        pipe = build_feature_pipeline(spec, fusion=fusion, use_cache=False, progress=False).fit(train)
        train_f, test_f = pipe.transform(train), pipe.transform(test)
        router = create_router("linear_mf", rank=3).fit(train_f, train.correct, train.cost)
        perf, cost = router.predict(test_f)
        own_scores[label] = evaluate_predictions(perf, cost, test.correct, test.cost).metrics["fixed_AUC"]
        features[label] = test_f
        with using(store):
            experiment = mlflow.get_experiment_by_name("registry-tests").experiment_id
            with mlflow.start_run(experiment_id=experiment):
                info, _ = log_router_model(router, test_f, list(MODELS), registered_model_name="encoders",
                                           pipeline=pipe, check_table=test)
        versions[label] = str(info.registered_model_version)
    assert features["wide"].n_features != features["narrow"].n_features
    # The candidate's table: its raw rows, and its own features (useless to the other version).
    eval_path = save_eval_table(tmp_path / "eval.npz", features["narrow"], test, feature_info={"spec": "offline:dim=6"})
    promote("encoders", versions["wide"], to="production", eval_table=eval_path, metric="budget/fixed_AUC")
    result = promote("encoders", versions["narrow"], to="production", eval_table=eval_path,
                     metric="budget/fixed_AUC", min_delta=-1.0)
    assert result.gate["candidate"] == pytest.approx(own_scores["narrow"], abs=1e-6)
    assert result.gate["production"] == pytest.approx(own_scores["wide"], abs=1e-6)
