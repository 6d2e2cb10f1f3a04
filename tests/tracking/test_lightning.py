"""Lightning's MLFlowLogger bound to the active run: per-epoch curves land in it, the run stays open."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning")

from mmroute.tracking import bind_lightning_logger, run_logger, unbind_lightning_logger  # noqa: E402


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters({"lr": 0.1})
        self.net = torch.nn.Linear(3, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y), on_epoch=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_epoch_curves_go_to_active_run(tmp_path):
    import mlflow

    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(ds, batch_size=8)

    class Holder:
        lightning_logger = "unset"

    holder = Holder()
    with mlflow.start_run() as run:
        mlflow.log_param("lr", "router value")  # must not clash with Lightning's hparams
        assert bind_lightning_logger(holder)
        assert holder.lightning_logger.run_id == run.info.run_id
        trainer = L.Trainer(max_epochs=3, logger=holder.lightning_logger, accelerator="cpu",
                            enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(Tiny(), loader, loader)
        client = mlflow.MlflowClient()
        assert client.get_run(run.info.run_id).info.status == "RUNNING"  # finalize left it open
        mlflow.log_metric("after_fit", 1.0)
    unbind_lightning_logger(holder)
    assert holder.lightning_logger is None
    assert not bind_lightning_logger(object())
    data = client.get_run(run.info.run_id).data
    assert data.params["lr"] == "router value" and data.params["lightning.lr"] == "0.1"
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 3
    assert len(client.get_metric_history(run.info.run_id, "val_loss")) == 3
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_run_logger_needs_a_run():
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        run_logger()
