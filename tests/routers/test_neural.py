"""Torch routers (mlp, mlp_mf, cmr, fusion_mf) on tiny data built here."""

from __future__ import annotations

import logging
import os
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("lightning")

from mmroute.features.types import Features  # noqa: E402
from mmroute.routers.neural import (  # noqa: E402
    CMRRouter,
    FusionMFConfig,
    FusionMFRouter,
    MLPMFRouter,
    MLPRouter,
)
from mmroute.routers.neural.modules import EnsembleNet  # noqa: E402

N, D_TEXT, D_IMAGE, M = 96, 8, 6, 3

# Tiny widths so every fit takes a fraction of a second.
TINY = {
    "mlp": (MLPRouter, {"hidden": (16, 8)}),
    "mlp_mf": (MLPMFRouter, {"hidden": (16,), "latent": 4}),
    "cmr": (CMRRouter, {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 16}),
    "fusion_mf": (FusionMFRouter, {"d_proj": 16, "hidden": (16,), "latent": 4, "cost_latent": 2,
                                   "n_ensemble": 1}),
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny tensors on a shared machine: extra intra-op threads only add contention.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_router(name: str, **overrides):
    cls, tiny = TINY[name]
    # No guard: these tests are about the networks (the guard has its own tests, test_guard.py).
    return cls(**{"max_epochs": 4, "batch_size": 32, "enable_progress_bar": False, "guard": "off", **tiny,
                  **overrides})


def make_data(seed: int = 0, n: int = N, images: bool = True, missing: float = 0.15):
    """Features with half the rows carrying an image, outcomes driven by the text, some missing."""
    rng = np.random.default_rng(seed)
    text = rng.normal(size=(n, D_TEXT)).astype(np.float32)
    weights = rng.normal(size=(D_TEXT, M))
    correct = (text @ weights + 0.5 * rng.normal(size=(n, M)) > 0).astype(float)
    cost = np.exp(np.arange(M)[None, :] + 0.1 * rng.normal(size=(n, M)))
    correct[rng.random((n, M)) < missing] = np.nan
    cost[rng.random((n, M)) < missing] = np.nan
    if images:
        mask = np.arange(n) % 2 == 0
        image = rng.normal(size=(n, D_IMAGE)).astype(np.float32) * mask[:, None]
        feats = Features(fused=np.hstack([text, image]), text=text, image=image, image_mask=mask)
    else:
        feats = Features.from_array(text)
    return feats, correct, cost


def forward_numpy(router, feats):
    with torch.no_grad():
        perf, cost = router.network_(torch.from_numpy(router.export_input(feats)))
    return perf.numpy(), cost.numpy()


@pytest.mark.parametrize("name", list(TINY))
def test_fit_predict_shapes_ranges_and_network(name):
    feats, correct, cost = make_data()
    router = make_router(name).fit(feats, correct, cost)
    perf, pcost = router.predict(feats)
    assert perf.shape == pcost.shape == (N, M)
    assert np.all((perf >= 0) & (perf <= 1))
    assert np.all(np.isfinite(pcost)) and np.all(pcost > 0)
    # Costs come back in original units: per-model scale e^0, e^1, e^2 is recovered roughly.
    assert np.all(np.diff(np.log(pcost.mean(0))) > 0.3)
    # NaN outcomes were masked: every logged loss is finite.
    history = router.train_results_[0].history
    assert history and all(np.isfinite(h["val_loss"]) and np.isfinite(h["train_loss"]) for h in history)
    net = router.network_
    assert not net.training
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in net.parameters())
    fwd_perf, fwd_cost = forward_numpy(router, feats)
    np.testing.assert_allclose(fwd_perf, perf, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fwd_cost, pcost, rtol=1e-6)
    assert router.export_input(feats).shape == (N, router.d_in_)


@pytest.mark.parametrize("name", ["mlp", "fusion_mf"])
def test_same_seed_gives_identical_predictions(name):
    feats, correct, cost = make_data()
    first = make_router(name, seed=3).fit(feats, correct, cost).predict(feats)
    second = make_router(name, seed=3).fit(feats, correct, cost).predict(feats)
    other = make_router(name, seed=4).fit(feats, correct, cost).predict(feats)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])


def test_fit_restores_global_torch_determinism_flag():
    feats, correct, cost = make_data()
    before = torch.are_deterministic_algorithms_enabled()
    make_router("mlp", max_epochs=1).fit(feats, correct, cost)
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.parametrize("name", ["cmr", "fusion_mf"])
def test_text_only_inputs_and_image_masking(name):
    text_feats, correct, cost = make_data(images=False)
    router = make_router(name).fit(text_feats, correct, cost)
    x = router.export_input(text_feats)
    # Text-only training: image part sized like the text (CLIP-like shared space), zeros, mask 0.
    assert x.shape == (N, 2 * D_TEXT + 1)
    assert np.all(x[:, D_TEXT:] == 0)
    perf_text, _ = router.predict(text_feats)
    # Image values on rows flagged as image-less must not change anything ...
    noise = np.random.default_rng(1).normal(size=(N, D_TEXT)).astype(np.float32)
    hidden = Features(fused=text_feats.fused, text=text_feats.text, image=noise, image_mask=np.zeros(N, bool))
    np.testing.assert_allclose(router.predict(hidden)[0], perf_text, rtol=1e-6, atol=1e-7)
    # ... while a real image (mask 1) reaches the network.
    shown = Features(fused=text_feats.fused, text=text_feats.text, image=noise, image_mask=np.ones(N, bool))
    assert not np.allclose(router.predict(shown)[0], perf_text)


def test_multimodal_router_checks_modality_widths():
    feats, correct, cost = make_data()
    router = make_router("fusion_mf").fit(feats, correct, cost)
    assert router.d_text_ == D_TEXT and router.d_image_ == D_IMAGE
    wrong = Features(fused=feats.fused, text=feats.text, image=np.zeros((N, D_IMAGE + 1), np.float32))
    with pytest.raises(ValueError, match="image features have 7 columns, expected 6"):
        router.predict(wrong)


def test_fusion_gate_ignores_image_without_mask():
    feats, correct, cost = make_data()
    router = make_router("fusion_mf").fit(feats, correct, cost)
    x = torch.from_numpy(router.export_input(feats))
    with torch.no_grad():
        _, weights = router.network_.fuse((x - router.network_.in_mean) / router.network_.in_std)
    no_image = ~feats.image_mask
    np.testing.assert_allclose(weights[no_image, 1].numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(weights.sum(1).numpy(), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_early_stopping_triggers_and_keeps_best_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    correct = (rng.random((200, M)) < 0.5).astype(float)  # pure noise: validation loss must rise
    cost = np.ones((200, M))
    router = MLPRouter(hidden=(128, 128), lr=1e-2, weight_decay=0.0, dropout=0.0, max_epochs=200, guard="off",
                       patience=3, batch_size=32, enable_progress_bar=False)
    router.fit(Features.from_array(x), correct, cost)
    result = router.train_results_[0]
    assert result.stopped_early and result.epochs_run < 200
    assert result.best_epoch == min(range(len(result.history)), key=lambda e: result.history[e]["val_loss"])


def test_no_validation_runs_all_epochs_and_explicit_validation_is_used():
    feats, correct, cost = make_data()
    router = make_router("mlp_mf", val_fraction=0.0, max_epochs=3).fit(feats, correct, cost)
    assert router.train_results_[0].epochs_run == 3 and router.train_results_[0].best_epoch is None
    val_feats, val_correct, val_cost = make_data(seed=1, n=20)
    router = make_router("mlp_mf", max_epochs=2).fit(feats, correct, cost, val_features=val_feats,
                                                     val_correct=val_correct, val_cost=val_cost)
    assert len(router.train_results_[0].history) == 2
    with pytest.raises(ValueError, match="val_features given without val_correct"):
        make_router("mlp_mf").fit(feats, correct, cost, val_features=val_feats)


def test_bad_config_errors_name_values():
    with pytest.raises(ValueError, match=r"hidden=\(0,\)"):
        MLPRouter(hidden=(0,))
    with pytest.raises(ValueError) as err:
        FusionMFConfig(precision="fp8", lr=-1.0, monitor="val_acc")
    message = str(err.value)  # every problem reported at once
    assert "precision='fp8'" in message and "bf16-mixed" in message
    assert "lr=-1.0" in message and "monitor='val_acc'" in message
    with pytest.raises(ValueError, match="d_model=10 is not divisible by n_heads=4"):
        CMRRouter(d_model=10, n_heads=4)
    with pytest.raises(ValueError, match="unknown option"):
        MLPRouter(hiddn=(4,))
    assert MLPRouter(hidden=[8, 4]).config.hidden == (8, 4)  # lists from CLI/YAML become tuples


def test_bad_outcomes_rejected():
    feats, correct, cost = make_data()
    with pytest.raises(ValueError, match=r"correctness must lie in \[0, 1\]"):
        make_router("mlp").fit(feats, correct * 2, cost)
    with pytest.raises(ValueError, match="costs must be >= 0"):
        make_router("mlp").fit(feats, correct, -cost)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_bf16_on_cpu_falls_back_to_fp32_with_warning(caplog):
    feats, correct, cost = make_data()
    with caplog.at_level(logging.WARNING, logger="mmroute"):
        router = make_router("mlp", precision="bf16-mixed", max_epochs=1).fit(feats, correct, cost)
    assert router.precision_ == "32-true"
    assert any("bf16-mixed" in r.getMessage() and "32-true" in r.getMessage() for r in caplog.records)


def test_logger_hook_gets_epoch_metrics_and_no_files_left(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger

    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    feats, correct, cost = make_data()
    router = make_router("fusion_mf", max_epochs=3)
    router.lightning_logger = CSVLogger(save_dir=tmp_path / "logs", name="run")
    router.fit(feats, correct, cost)
    assert os.listdir(work) == []  # no lightning_logs/ or checkpoints in the working directory
    (metrics_csv,) = (tmp_path / "logs").rglob("metrics.csv")
    header = metrics_csv.read_text().splitlines()[0].split(",")
    assert {"train_loss", "val_loss", "val_auroc"} <= set(header)
    # The hook does not travel with a pickled router; the weights do.
    clone = pickle.loads(pickle.dumps(router))
    assert clone.lightning_logger is None
    np.testing.assert_array_equal(clone.predict(feats)[0], router.predict(feats)[0])


def test_ensemble_is_one_network():
    feats, correct, cost = make_data()
    router = make_router("mlp", n_ensemble=2, max_epochs=2).fit(feats, correct, cost)
    assert isinstance(router.network_, EnsembleNet) and len(router.train_results_) == 2
    perf, pcost = router.predict(feats)
    fwd_perf, fwd_cost = forward_numpy(router, feats)
    np.testing.assert_allclose(fwd_perf, perf, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fwd_cost, pcost, rtol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cmr", "fusion_mf"])
def test_network_exports_to_onnx_with_dynamic_batch(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    feats, correct, cost = make_data()
    router = make_router(name, max_epochs=1).fit(feats, correct, cost)
    x = router.export_input(feats)
    path = tmp_path / f"{name}.onnx"
    batch = torch.export.Dim("batch")
    torch.onnx.export(router.network_, (torch.from_numpy(x[:4]),), str(path), input_names=["x"],
                      output_names=["perf", "cost"], dynamic_shapes=({0: batch},), dynamo=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    perf, pcost = session.run(None, {"x": x})
    expected = router.predict(feats)
    np.testing.assert_allclose(perf, expected[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pcost, expected[1], rtol=1e-4)


def test_registered_under_their_names():
    from mmroute.routers import create_router, list_routers

    assert {"mlp", "mlp_mf", "cmr", "fusion_mf"} <= set(list_routers())
    router = create_router("fusion_mf", latent=8)
    assert isinstance(router, FusionMFRouter) and router.config.latent == 8
    assert router.lightning_logger is None and router.lightning_callbacks == []


@pytest.mark.parametrize("name", ["fusion_mf", "cmr"])
def test_learned_image_tower_on_pixels_trains_and_exports(name, tmp_path):
    from mmroute.export import export_router
    from mmroute.routers.neural.modules import ImageTower

    rng = np.random.default_rng(0)
    n, side = 64, 8
    pixels = rng.random((n, 3 * side * side)).astype(np.float32)      # 3 x 8 x 8, channel first
    text = rng.normal(size=(n, D_TEXT)).astype(np.float32)
    correct = (pixels[:, :M] > 0.5).astype(float)
    cost = np.exp(np.tile(np.arange(M, dtype=float), (n, 1)))
    feats = Features(fused=text, text=text, image=pixels, image_mask=np.ones(n, bool))
    router = make_router(name, image_tower="cnn", max_epochs=2).fit(feats, correct, cost)
    member = router.network_
    assert isinstance(member.proj_image, ImageTower) and member.proj_image.side == side
    result = export_router(router, feats.subset(np.arange(16)), tmp_path / "tower.onnx")
    assert result.max_abs_diff_perf <= 1e-4


def test_learned_image_tower_names_features_that_are_not_pixels():
    feats, correct, cost = make_data()  # image width 6: not a square image
    with pytest.raises(ValueError, match=r"image_tower='cnn' reads square pixel images .* width 6"):
        make_router("fusion_mf", image_tower="cnn").fit(feats, correct, cost)
    # Without training images there is nothing for a tower to learn from: the branch stays linear.
    text_only, correct, cost = make_data(images=False)
    router = make_router("fusion_mf", image_tower="cnn", max_epochs=1).fit(text_only, correct, cost)
    assert not router.image_seen_


def test_batched_fetch_gives_the_rows_of_a_per_row_loader():
    """RowBatches + batch_as_is: the batches a per-row TensorDataset loader gives, in the same
    shuffled order (same generator), with one index per tensor."""
    from torch.utils.data import DataLoader, TensorDataset

    from mmroute.routers.neural.lit import RowBatches, batch_as_is

    tensors = [torch.arange(50, dtype=torch.float32).reshape(25, 2), torch.arange(25, dtype=torch.float32)]
    ours = DataLoader(RowBatches(*tensors), batch_size=7, shuffle=True,
                      generator=torch.Generator().manual_seed(3), collate_fn=batch_as_is)
    theirs = DataLoader(TensorDataset(*tensors), batch_size=7, shuffle=True, generator=torch.Generator().manual_seed(3))
    pairs = list(zip(ours, theirs, strict=True))
    assert len(pairs) == 4
    for a, b in pairs:
        assert len(a) == len(b) == 2
        for ta, tb in zip(a, b):
            torch.testing.assert_close(ta, tb, rtol=0, atol=0)
    assert not torch.equal(pairs[0][0][1], torch.arange(7, dtype=torch.float32))   # it did shuffle
