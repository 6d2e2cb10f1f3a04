"""PipelineConfig validation and the router option syntax."""

from __future__ import annotations

import pytest

from mmroute.pipeline.config import PipelineConfig, convert_value, parse_router_options, router_overrides


def test_defaults_are_valid_and_strings_split():
    cfg = PipelineConfig(routers="knn, linear", rules="budget", router_options=())
    assert cfg.routers == ("knn", "linear") and cfg.rules == ("budget",)
    assert cfg.to_dict()["routers"] == ["knn", "linear"]


def test_all_problems_reported_together():
    with pytest.raises(ValueError) as err:
        PipelineConfig(split="sideways", train_frac=1.5, mode=44, rules=("vote",), router_options=("k=3",))
    msg = str(err.value)
    for part in ("split='sideways'", "mode=44", "rules=['vote']", "router option 'k=3'"):
        assert part in msg
    with pytest.raises(ValueError, match="split='out' needs train_datasets"):
        PipelineConfig(split="out", test_datasets=("a",))
    assert PipelineConfig(split="out", train_datasets=("a",)).test_datasets == ()  # every other dataset
    with pytest.raises(ValueError, match="select_metric='tradeoff/nAUC' needs rule 'tradeoff'"):
        PipelineConfig(rules=("budget",), select_metric="tradeoff/nAUC")


def test_parse_router_options():
    assert parse_router_options(["knn.k=20", "*.max_epochs=5", "knn.metric = cosine"]) == {
        "knn": {"k": "20", "metric": "cosine"}, "*": {"max_epochs": "5"}}
    with pytest.raises(ValueError, match="expected '<router>.<field>=<value>'"):
        parse_router_options(["k=3"])


def test_convert_value_types():
    assert convert_value("3", int, "x") == 3 and convert_value("3.0", int, "x") == 3
    assert convert_value("1e-3", float, "x") == 0.001
    assert convert_value("false", bool, "x") is False
    assert convert_value("none", int | None, "x") is None and convert_value("4", int | None, "x") == 4
    assert convert_value("256,128", tuple[int, ...], "x") == (256, 128)
    with pytest.raises(ValueError, match=r"mlp\.hidden='2.5': expected an integer"):
        convert_value("2.5", int, "mlp.hidden")
    with pytest.raises(ValueError, match="expected a boolean"):
        convert_value("maybe", bool, "x")


def test_router_overrides_typed_and_scoped():
    import dataclasses

    from mmroute.routers import list_routers, router_class

    names = list_routers()
    fields = {n: {f.name for f in dataclasses.fields(router_class(n).config_class)} for n in names}
    neural = [n for n in names if {"max_epochs", "lr"} <= fields[n]]
    plain = [n for n in names if "max_epochs" not in fields[n]]
    assert neural and plain
    cfg = PipelineConfig(max_epochs=3, router_options=(f"{neural[0]}.lr=0.01",))
    got = router_overrides(neural[0], cfg)
    assert got == {"max_epochs": 3, "lr": 0.01}
    assert "max_epochs" not in router_overrides(plain[0], cfg)  # only where the field exists
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['nope'\]"):
        router_overrides(plain[0], PipelineConfig(router_options=(f"{plain[0]}.nope=1",)))
