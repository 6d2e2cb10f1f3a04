import numpy as np
import pytest

from mmroute.export import (
    ExportParityError,
    NotExportableError,
    build_input,
    export_router,
    input_layout,
    router_input,
)
from mmroute.export.graph import run_onnx
from mmroute.features.types import Features
from mmroute.routers import list_routers

NOT_DEPLOYABLE = {"oracle", "random"}


@pytest.fixture(scope="module")
def held_out(tiny_data):
    return tiny_data[0].subset(np.arange(160, 240))


@pytest.mark.parametrize("name", sorted(set(list_routers()) - NOT_DEPLOYABLE))
def test_every_trainable_router_exports_with_parity(name, fitted, held_out, tmp_path):
    router = fitted(name)
    result = export_router(router, held_out, tmp_path / f"{name}.onnx")
    assert result.path.is_file() and result.router == name
    assert result.max_abs_diff_perf <= 1e-4 and result.max_abs_diff_cost <= 1e-4
    assert result.n_check_rows == 80 and result.n_models == 3
    # The graph has a dynamic batch axis: batch 1 and a larger batch both run and match.
    perf_ref, cost_ref = router.predict(held_out)
    for rows in (slice(0, 1), slice(0, 80)):
        perf, cost = run_onnx(result.path, router_input(router, held_out)[rows])
        np.testing.assert_allclose(perf, perf_ref[rows], atol=1e-4)
        np.testing.assert_allclose(cost, cost_ref[rows], atol=1e-4)
    if name in ("fusion_mf", "cmr", "kmeans_adaptive"):  # they read the modalities, not the fused vector
        assert result.input_layout == (("text", 12), ("image", 8), ("image_mask", 1))
        np.testing.assert_array_equal(build_input(held_out, result.input_layout),
                                      router_input(router, held_out))
        # Text-only rows (no image field at all) rebuild to zeros + mask 0, as the router does.
        text_only = Features(fused=held_out.text, text=held_out.text)
        np.testing.assert_array_equal(build_input(text_only, result.input_layout),
                                      router_input(router, text_only))
    else:
        assert result.input_layout == (("fused", 20),)


@pytest.mark.parametrize("name", sorted(NOT_DEPLOYABLE & set(list_routers())))
def test_evaluation_only_routers_are_not_exportable(name, fitted, held_out, tmp_path):
    with pytest.raises(NotExportableError, match=name):
        export_router(fitted(name), held_out, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def test_parity_failure_raises_and_leaves_no_file(fitted, held_out, tmp_path, monkeypatch):
    router = fitted("linear")
    native_predict = router.predict
    # A router whose native predictions drift from what the graph computes (e.g. a
    # post-processing step the graph does not contain) must be caught by the check.
    monkeypatch.setattr(router, "predict", lambda f, **kw: tuple(a + 1e-3 for a in native_predict(f, **kw)))
    target = tmp_path / "out" / "linear.onnx"
    with pytest.raises(ExportParityError, match=r"max \|perf diff\| = 0\.001"):
        export_router(router, held_out, target)
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_bad_arguments_are_rejected(fitted, held_out, tmp_path):
    with pytest.raises(ValueError, match="exporter='onnxmltools' is not one of"):
        export_router(fitted("linear"), held_out, tmp_path / "x.onnx", exporter="onnxmltools")
    with pytest.raises(ValueError, match="non-empty"):
        export_router(fitted("linear"), held_out.subset(np.arange(0)), tmp_path / "x.onnx")


def test_custom_layout_when_the_input_is_not_made_of_feature_fields(held_out):
    x = held_out.fused * 2.0
    assert input_layout(x, held_out) == (("custom", 20),)
