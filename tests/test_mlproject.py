"""MLproject and conda.yaml stay in sync with pyproject.toml and with the CLI they call."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
# What each entry point's (first) mmroute command must be.
SUBCOMMAND = {"main": "run", "prepare": "prepare", "embed": "embed", "train": "train", "sweep": "sweep",
              "evaluate": "evaluate", "register": "register", "promote": "promote", "rollback": "rollback",
              "probe": "probe"}
ENTRY_POINTS = set(SUBCOMMAND)


def _norm(req: str) -> str:
    r = Requirement(req)
    marker = f"; {r.marker}" if r.marker else ""
    return f"{r.name.lower().replace('_', '-')}{r.specifier}{marker}"


def test_conda_yaml_lists_the_pyproject_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = yaml.safe_load((ROOT / "conda.yaml").read_text())
    pip = next(d["pip"] for d in conda["dependencies"] if isinstance(d, dict) and "pip" in d)
    from_conda = sorted(_norm(r) for r in pip if not r.startswith("-e"))
    assert from_conda == sorted(_norm(r) for r in project["dependencies"])
    assert "-e ." in pip  # the project itself, so `python -m mmroute` runs in the conda env
    python = next(d for d in conda["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=", 1)[1] + ".0" in SpecifierSet(project["requires-python"])
    assert "pip" in conda["dependencies"]


@pytest.fixture(scope="module")
def project():
    from mlflow.projects import _project_spec

    return _project_spec.load_project(str(ROOT))


def test_entry_points_and_environment(project):
    spec = yaml.safe_load((ROOT / "MLproject").read_text())
    assert spec["name"] == "mmroute" and spec["conda_env"] == "conda.yaml"
    assert set(spec["entry_points"]) == ENTRY_POINTS


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_each_command_is_a_thin_cli_call_that_parses(project, name):
    from mmroute.cli import build_parser

    entry = project.get_entry_point(name)
    placeholders = set(re.findall(r"{(\w+)}", entry.command))
    assert placeholders == set(entry.parameters), "every parameter used, nothing undeclared"
    for param in entry.parameters.values():
        assert param.type in ("string", "float", "path", "uri")
    # Substitute the defaults exactly as `mlflow run` does (shell-quoted), then parse with our CLI.
    required = {k: ("1" if p.type == "float" else "0123abcd")
                for k, p in entry.parameters.items() if p.default is None}
    command = entry.compute_command(required, storage_dir=None)
    # The mmroute call: the first `python -m mmroute` segment of the shell command.
    segments = [shlex.split(part) for part in re.split(r"&&|;", command)]
    argv = next(seg for seg in segments
                if seg[:3] == ["python", "-m", "mmroute"] or seg[1:2] == [f"registry_scripts/{name}.py"])
    argv = [a.replace('"$out"', "x.npz").replace("$out", "x.npz") for a in argv]
    if argv[1].startswith("registry_scripts/"):
        # The registry scripts are thin wrappers of `mmroute <script name> ...`.
        assert (ROOT / argv[1]).is_file()
        argv = ["python", "-m", "mmroute", name, *argv[2:]]
    assert argv[:3] == ["python", "-m", "mmroute"] and argv[3] == SUBCOMMAND[name]
    args = build_parser().parse_args(argv[3:])
    assert callable(args.func)
    if name in ("main", "train", "sweep"):
        from mmroute.cli.pipeline import config_from_args

        cfg = config_from_args(args, getattr(args, "routers", None) or (args.router,))
        assert cfg.max_epochs is None and cfg.mode is None and cfg.router_options == ()
        assert cfg.split_seed == 42 and cfg.data.startswith("synthetic")


def test_float_typed_integers_parse_as_integers(project):
    from mmroute.cli import build_parser

    command = project.get_entry_point("train").compute_command(
        {"split_seed": "7.0", "max_epochs": "3", "mode": "22", "router_options": "knn.k=3 *.lr=0.01"},
        storage_dir=None)
    args = build_parser().parse_args(shlex.split(command)[3:])
    assert (args.split_seed, args.max_epochs, args.mode) == (7, 3, 22)
    assert args.router_options == ["knn.k=3 *.lr=0.01"]


@pytest.mark.parametrize("name", ["main", "train", "sweep"])
def test_pipeline_entry_points_expose_every_config_field_with_its_default(project, name):
    """main/train/sweep parameters are PipelineConfig's fields, with the dataclass defaults."""
    import dataclasses

    from mmroute.cli import build_parser
    from mmroute.cli.pipeline import config_from_args
    from mmroute.pipeline import PipelineConfig

    entry = project.get_entry_point(name)
    fields = {f.name for f in dataclasses.fields(PipelineConfig)} - {"experiment"}  # set by `mlflow run`
    if name == "train":
        fields -= {"routers", "select_metric"}
    assert fields <= set(entry.parameters), sorted(fields - set(entry.parameters))
    required = {"router": "knn"} if name == "train" else {}
    args = build_parser().parse_args(shlex.split(entry.compute_command(required, storage_dir=None))[3:])
    cfg = config_from_args(args, ("knn",) if name == "train" else None)
    default = PipelineConfig()
    for field in fields - {"routers"}:
        assert getattr(cfg, field) == getattr(default, field), field
    # the 'out' split is reachable from MLproject (it needs train_datasets)
    out = build_parser().parse_args(shlex.split(entry.compute_command(
        {**required, "split": "out", "train_datasets": "a,b"}, storage_dir=None))[3:])
    assert config_from_args(out, ("knn",) if name == "train" else None).train_datasets == ("a", "b")


def test_old_router_options_spelling_still_works(project):
    from mmroute.cli import build_parser
    from mmroute.cli.pipeline import config_from_args

    with pytest.warns(DeprecationWarning, match="--options is deprecated"):
        args = build_parser().parse_args(["sweep", "--set", "knn.k=3", "--options", "*.lr=0.1"])
    assert config_from_args(args).router_options == ("knn.k=3", "*.lr=0.1")
