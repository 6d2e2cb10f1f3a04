import pytest
from mlflow import MlflowClient

from mmroute.registry import (
    PREVIOUS_PRODUCTION,
    PRODUCTION,
    STAGING,
    PromotionRefused,
    load_eval_table,
    promote,
    register_and_stage,
    register_best,
    rollback,
    score_model,
    select_run,
    status,
)


def _aliases(name):
    return {a: str(v) for a, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_register_best_picks_the_best_deployable_child_and_tags_it(sweep):
    run, parent = select_run(MlflowClient(), sweep["parent"], "budget/nAUC")
    assert run.info.run_id == sweep["good"] and parent == sweep["parent"]  # the oracle is skipped
    version = register_best(sweep["parent"], "best-router")
    assert str(version.version) == "1" and version.run_id == sweep["good"]
    tags = version.tags
    assert tags["source_run_id"] == sweep["good"] and tags["parent_run_id"] == sweep["parent"]
    assert tags["router"] == "_test_affine" and tags["selection_metric"] == "val/budget/nAUC"
    assert len(tags["data_hash"]) == 16
    good_nauc = MlflowClient().get_run(sweep["good"]).data.metrics["budget/nAUC"]
    assert float(tags["metric.budget/nAUC"]) == pytest.approx(good_nauc)
    with pytest.raises(KeyError, match="no child run .* logged the validation metric 'val/budget/missing'"):
        register_best(sweep["parent"], "best-router", metric="budget/missing")


def test_the_best_child_is_chosen_on_validation_rows_never_on_test_rows(store):
    """A child that wins on the test metric but loses on its validation twin is not chosen."""
    import mlflow

    experiment = mlflow.get_experiment_by_name("registry-tests").experiment_id
    with mlflow.start_run(run_name="crossing", experiment_id=experiment) as parent:
        ids = {}
        for name, val, test in (("val-winner", 0.7, 0.5), ("test-winner", 0.6, 0.9)):
            with mlflow.start_run(run_name=name, nested=True, experiment_id=experiment) as child:
                mlflow.log_metrics({"budget/nAUC": test, "val/budget/nAUC": val})
                ids[name] = child.info.run_id
    run, _ = select_run(MlflowClient(), parent.info.run_id, "budget/nAUC")
    assert run.info.run_id == ids["val-winner"]
    assert select_run(MlflowClient(), parent.info.run_id, "val/budget/nAUC")[0].info.run_id == ids["val-winner"]


def test_eval_table_scores_match_the_logged_metric(sweep):
    version = register_best(sweep["good"], "scored-router")
    table = load_eval_table(f"runs:/{sweep['good']}/eval/eval_table.npz")
    value = score_model(f"models:/scored-router/{version.version}", table, "budget/nAUC")
    assert value == pytest.approx(MlflowClient().get_run(sweep["good"]).data.metrics["budget/nAUC"], abs=1e-6)


def test_staging_gate_and_rollback(sweep):
    name, table = "flow-router", sweep["eval_table"]
    register_and_stage(sweep["bad"], name)
    assert _aliases(name) == {STAGING: "1"}
    with pytest.raises(ValueError, match="gated: pass eval_table"):
        promote(name, to=PRODUCTION)
    first = promote(name, to=PRODUCTION, eval_table=table)  # nothing in production yet
    assert first.version == "1" and first.gate["production"] is None

    register_and_stage(sweep["parent"], name)  # v2: the good router
    passed = promote(name, to=PRODUCTION, eval_table=table, min_delta=0.05)
    assert passed.gate["passed"] and passed.gate["delta"] >= 0.05 and passed.previous == "1"
    assert _aliases(name) == {STAGING: "2", PRODUCTION: "2", PREVIOUS_PRODUCTION: "1"}
    v2 = MlflowClient().get_model_version(name, "2")
    assert v2.tags["previous_production_version"] == "1" and "candidate" in v2.tags["gate"]

    register_and_stage(sweep["bad"], name)  # v3: worse than production
    before = _aliases(name)
    with pytest.raises(PromotionRefused, match=r"improvement -0\.\d+ < min_delta 0"):
        promote(name, to=PRODUCTION, eval_table=table)
    assert _aliases(name) == before
    assert "previous_production_version" not in MlflowClient().get_model_version(name, "3").tags
    with pytest.raises(PromotionRefused, match="already in production"):
        promote(name, "2", to=PRODUCTION, eval_table=table)

    back = rollback(name)
    assert back.version == "1" and back.previous == "2"
    assert _aliases(name) == {STAGING: "3", PRODUCTION: "1"}
    assert "rolled_back_at" in MlflowClient().get_model_version(name, "2").tags
    with pytest.raises(ValueError, match="no 'previous-production' version"):
        rollback(name)

    info = status(name)
    assert info["aliases"] == {STAGING: "3", PRODUCTION: "1"}
    assert info["versions"]["2"]["metrics"]["budget/nAUC"] > info["versions"]["1"]["metrics"]["budget/nAUC"]


class _FailingClient(MlflowClient):
    """Fails when the production alias is moved: after previous-production and tags were set."""

    def set_registered_model_alias(self, name, alias, version):
        if alias == PRODUCTION and not getattr(self, "restoring", False):
            self.restoring = True  # the restore that follows must go through
            raise RuntimeError("injected registry failure")
        return super().set_registered_model_alias(name, alias, version)


def test_a_promotion_failing_midway_leaves_aliases_and_tags_as_they_were(sweep):
    name = "failing-router"
    register_and_stage(sweep["bad"], name)
    promote(name, to=PRODUCTION, eval_table=sweep["eval_table"])
    register_and_stage(sweep["parent"], name)
    client = MlflowClient()
    aliases, model_tags = _aliases(name), dict(client.get_registered_model(name).tags)
    v2_tags = dict(client.get_model_version(name, "2").tags)

    with pytest.raises(RuntimeError, match="injected registry failure"):
        promote(name, to=PRODUCTION, eval_table=sweep["eval_table"], client=_FailingClient())
    assert _aliases(name) == aliases == {STAGING: "2", PRODUCTION: "1"}
    assert dict(client.get_registered_model(name).tags) == model_tags
    assert dict(client.get_model_version(name, "2").tags) == v2_tags
    # The same promotion with a healthy client goes through.
    assert promote(name, to=PRODUCTION, eval_table=sweep["eval_table"]).version == "2"


@pytest.mark.slow
def test_concurrent_promoters_serialise_and_leave_a_consistent_registry(sweep, store):
    from concurrency_helpers import check_consistent, run_promoters

    name = "contested-router"
    for source in ("bad", "good", "bad", "good"):
        register_best(sweep[source], name)
    results = run_promoters(store, name, ["1", "2", "3", "4"], sweep["eval_table"])
    order = check_consistent(MlflowClient(), name, results)
    assert len(order) == 4  # nobody waited longer than the lock allows on a local store


def test_a_promoter_finding_the_lock_held_waits_then_fails_clearly(sweep, monkeypatch):
    from mmroute.registry import PromotionBusy
    from mmroute.registry.lock import RegistryLock

    name = "locked-router"
    register_and_stage(sweep["good"], name)
    client = MlflowClient()
    monkeypatch.setenv("MMROUTE_LOCK_WAIT_S", "0.5")
    with RegistryLock(client, name):
        with pytest.raises(PromotionBusy, match=r"another promotion of 'locked-router' is in progress .*held by"):
            promote(name, to=PRODUCTION, eval_table=sweep["eval_table"], client=client)
    assert PRODUCTION not in _aliases(name)
    assert "promoted_to_production_at" not in client.get_model_version(name, "1").tags
    # An abandoned lock (its holder was killed) is broken once its lease is over.
    stale = RegistryLock(client, name, lease_s=0.0)
    stale.acquire()
    assert promote(name, to=PRODUCTION, eval_table=sweep["eval_table"], client=client).version == "1"
    with pytest.raises(PromotionBusy, match="lost the promotion lock"):
        stale.verify()
