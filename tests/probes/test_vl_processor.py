"""The real processor path of vision-language backbones, on a tiny Qwen2-VL / Qwen2.5-VL whose
processor is assembled offline (probe_tiny.tiny_vl_processor): extraction, training and the served
model go through the same code users run (load_backbone -> AutoProcessor -> ProcessorInputs)."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from probe_tiny import IMAGE_TOKEN, fit_probe_router, saved_tiny_vl, tiny_table


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_processor_places_image_tokens_and_mrope_positions(family, tmp_path):
    from mmroute.probes.cache import HiddenStateCache
    from mmroute.probes.extract import extract_hidden_states
    from mmroute.probes.inputs import ProcessorInputs, load_backbone

    model_dir = saved_tiny_vl(tmp_path / "model", family)
    model, builder = load_backbone(str(model_dir))
    assert isinstance(builder, ProcessorInputs)
    table = tiny_table(6, image_dir=tmp_path)
    batch = builder([{"id": "0", "text": str(table.questions[0]), "image": table.image_paths[0]}])
    # An 8x8 image: a 4x4 grid of 2x2 patches, merged 2x2 into 4 image tokens.
    assert int((batch["input_ids"] == IMAGE_TOKEN).sum()) == 4
    assert batch["pixel_values"].shape == (16, 24) and batch["image_grid_thw"].tolist() == [[1, 4, 4]]
    cache = extract_hidden_states(model, builder, table, tmp_path / "cache", layer=2, accelerator="cpu")
    assert isinstance(cache, HiddenStateCache) and cache.position_rows == 3
    _, _, pos = cache.tokens(str(table.ids[0]))
    # M-RoPE: the image's tokens share the temporal index and differ in height/width.
    assert pos.shape[0] == 3 and not bool((pos[1] == pos[0]).all())


def test_vl_probe_trains_and_serves_an_image_query(tmp_path):
    import mlflow

    from mmroute.export.probe_pyfunc import request_frame, save_probe_router_model

    model_dir = saved_tiny_vl(tmp_path / "model")
    table = tiny_table(40, image_dir=tmp_path)
    router, feats, _ = fit_probe_router(model_dir, table, tmp_path / "cache", head="relope", max_epochs=2)
    save_probe_router_model(router, table.models, tmp_path / "served", backbone=str(model_dir))
    served = mlflow.pyfunc.load_model(str(tmp_path / "served"))
    rows = [0, 1, 2]  # images on even rows
    with open(table.image_paths[0], "rb") as fh:
        b64 = base64.b64encode(fh.read()).decode()
    frame = request_frame([str(table.texts()[r]) for r in rows], [b64, None, table.image_paths[2]])
    out = served.predict(frame, params={"defer_share": 0.5})
    assert list(out.columns)[:4] == ["defer", "p_correct", "model", "threshold"]
    np.testing.assert_allclose(out["p_correct"], router.predict_correctness(feats.subset(np.array(rows))), atol=1e-4)
    assert out["threshold"].iloc[0] == pytest.approx(router.threshold(defer_share=0.5))
    with pytest.raises(mlflow.exceptions.MlflowException, match="neither base64 image bytes"):
        served.predict(request_frame(["the cat"], ["not an image"]))
